"""sha256 of the bundled weights as `aneurysmseg export` wrote them into Resources/Models.

Written by the export, kept inside the package so that the bundled folder is checked against
it rather than against itself (docs/model-integrity.md). Do not edit by hand.
"""

FILES = {
    'manifest.json': '5e23c96efe7d5eee9e6f5bb8d525fe46ee8e8c9c7f97704a76a399bd08276239',
    'coarse_deepmedic.pt': '8275b9a43ec877a4f7c7f006d4c3a3d664403ab157a85e4ecd60704735c0fdef',
    'fine_se_unet.pt': '7a205ad40c53e34e4e3de45f42d5ac76188441ef4fd4b5dd2249fe103133a311',
    'vessels_unet.pt': 'caa752834b7610b22734a2b27a5f8ed38d362fa522c106653f3aa288f886663e',
    'finding_classifier.json': '2cf8296142cb43602434addb566ee246bda238a0f17f141f67ee015084aef2b0',
}
