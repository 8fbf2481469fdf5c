"""sha256 of the bundled weights as `aneurysmseg export` wrote them into Resources/Models.

Written by the export, kept inside the package so that the bundled folder is checked against
it rather than against itself (docs/model-integrity.md). Do not edit by hand.
"""

FILES = {
    'manifest.json': '057932552f536a0fbe0f48e67589e4750d0d53df7ae0dd716be1e58b0473b235',
    'coarse_deepmedic.pt': '8275b9a43ec877a4f7c7f006d4c3a3d664403ab157a85e4ecd60704735c0fdef',
    'fine_se_unet.pt': '7a205ad40c53e34e4e3de45f42d5ac76188441ef4fd4b5dd2249fe103133a311',
    'vessels_unet.pt': 'caa752834b7610b22734a2b27a5f8ed38d362fa522c106653f3aa288f886663e',
    'finding_classifier.json': '6c189e8fbaa7aebaa7d7f0e1c89aee50af081dd989dfc567f0b990e68567dfb9',
}
