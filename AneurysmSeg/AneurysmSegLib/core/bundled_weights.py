"""sha256 of the bundled weights as `aneurysmseg export` wrote them into Resources/Models.

Written by the export, kept inside the package so that the bundled folder is checked against
it rather than against itself (docs/model-integrity.md). Do not edit by hand.
"""

FILES = {
    'manifest.json': 'b0ab94062e7e66f6f7ef20276afbb718e9b4d1c92cf4544bebf16cf7c9fb5386',
    'coarse_deepmedic.pt': '8275b9a43ec877a4f7c7f006d4c3a3d664403ab157a85e4ecd60704735c0fdef',
    'fine_se_unet.pt': '7a205ad40c53e34e4e3de45f42d5ac76188441ef4fd4b5dd2249fe103133a311',
    'vessels_unet.pt': '823fe9ad78be736ae526e10e77b2b5004606551507e1eba58b4683d173cfe1e4',
}
