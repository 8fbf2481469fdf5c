"""Files in and out: images (geometry kept exactly), seeds, STL surfaces, pictures, atomic writes."""
