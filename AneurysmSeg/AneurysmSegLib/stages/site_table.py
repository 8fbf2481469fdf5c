"""Site classifier table (per site: mean and SD of |L-R|, A-P, I-S offsets from the trunk origin in
mm, prior = share of samples), fitted by benchmarks/fit_site_table.py on 38 phantom cases
at 288 x 288 x 96 (``generate_dataset(seed=11, n_aneurysms=3, treated=False)``, 14 cases, and seed 7,
24 cases) (62 aneurysms; leave-one-case-out: site group 0.89, fine site 0.79, side 0.95)."""

SITE_TABLE = {'AcomA': {'mean': [2.98, -5.92, 20.43], 'n': 12, 'prior': 0.1935, 'sd': [3.4, 6.48, 4.31]},
 'BA_tip': {'mean': [2.32, 25.31, 14.59], 'n': 5, 'prior': 0.0806, 'sd': [2.0, 2.74, 2.88]},
 'ICA_PcomA': {'mean': [15.0, 1.34, 10.47], 'n': 13, 'prior': 0.2097, 'sd': [2.73, 14.59, 3.82]},
 'ICA_term': {'mean': [16.71, 9.88, 17.76], 'n': 3, 'prior': 0.0484, 'sd': [2.0, 2.17, 3.16]},
 'MCA_bif': {'mean': [36.38, 10.73, 15.75], 'n': 20, 'prior': 0.3226, 'sd': [6.2, 17.68, 5.35]},
 'Pericallosal': {'mean': [2.03, -2.19, 56.89], 'n': 1, 'prior': 0.0161, 'sd': [4.0, 4.0, 4.0]},
 'bend_A2': {'mean': [2.12, -10.93, 61.61], 'n': 1, 'prior': 0.0161, 'sd': [4.0, 4.0, 4.0]},
 'bend_ICA': {'mean': [15.88, -10.94, 2.66], 'n': 5, 'prior': 0.0806, 'sd': [2.25, 7.64, 5.43]},
 'bend_M1': {'mean': [30.86, 10.41, 19.91], 'n': 2, 'prior': 0.0323, 'sd': [4.0, 4.0, 4.0]}}
