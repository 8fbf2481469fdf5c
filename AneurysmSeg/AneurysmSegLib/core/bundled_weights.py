"""sha256 of the bundled weights as `aneurysmseg export` wrote them into Resources/Models.

Written by the export, kept inside the package so that the bundled folder is checked against
it rather than against itself (docs/model-integrity.md). Do not edit by hand.
"""

FILES = {
    'manifest.json': '26133ec1b49b659204f1ef151896292f167aec1b066119d0f38f0c5473bfd92d',
    'coarse_deepmedic.pt': '8275b9a43ec877a4f7c7f006d4c3a3d664403ab157a85e4ecd60704735c0fdef',
    'fine_se_unet.pt': '7a205ad40c53e34e4e3de45f42d5ac76188441ef4fd4b5dd2249fe103133a311',
    'vessels_unet.pt': 'beed146f2e5ab21aa461ec6064be60a64a2586183cb69065264975dbf2c83740',
}
