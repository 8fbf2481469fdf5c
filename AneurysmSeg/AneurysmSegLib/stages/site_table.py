"""Site classifier table, fitted on phantom truth by benchmarks/fit_site_table.py.

Per site: mean and SD of |L-R|, A-P, I-S offsets from the landmark (location.site_landmark: the
carotid pair's midpoint on the half-maximum tree), in mm; prior = share of samples. Fitted on 58
phantom cases at 288 x 288 x 96, seeds disjoint from the evaluation's (2): ``generate_dataset(seed=7)``
(24 cases) and ``generate_dataset(seed=11, n_aneurysms=3, treated=False)`` (14), classic anatomy, and
``aneurysmseg phantom DIR --cases 20 --seed 13 --shape 288 288 96 --set 'anatomy="varied"'`` (20, more
circle-of-Willis variants). 84 aneurysms; leave-one-case-out: site group 0.94, fine site 0.81, side 0.93
(the same fit on the learnt tree's landmark, which the pipeline used before: 0.86, 0.71, 0.92)"""

SITE_TABLE = {'AcomA': {'mean': [2.3, -2.46, 19.45], 'n': 16, 'prior': 0.1905, 'sd': [2.19, 4.09, 6.63]},
 'BA_tip': {'mean': [1.51, 24.76, 16.66], 'n': 6, 'prior': 0.0714, 'sd': [2.0, 5.24, 6.71]},
 'ICA_PcomA': {'mean': [14.84, 6.55, 8.94], 'n': 15, 'prior': 0.1786, 'sd': [2.0, 2.02, 6.31]},
 'ICA_term': {'mean': [15.64, 9.89, 17.77], 'n': 3, 'prior': 0.0357, 'sd': [2.0, 2.16, 3.16]},
 'MCA_bif': {'mean': [38.06, 16.41, 16.02], 'n': 24, 'prior': 0.2857, 'sd': [3.91, 5.32, 6.01]},
 'Pericallosal': {'mean': [2.79, -8.27, 53.3], 'n': 5, 'prior': 0.0595, 'sd': [3.14, 6.44, 3.89]},
 'bend_A2': {'mean': [2.34, -8.24, 40.85], 'n': 2, 'prior': 0.0238, 'sd': [4.0, 4.0, 4.0]},
 'bend_ICA': {'mean': [16.46, -7.83, 5.4], 'n': 9, 'prior': 0.1071, 'sd': [2.36, 6.76, 10.45]},
 'bend_M1': {'mean': [30.62, 9.06, 20.72], 'n': 4, 'prior': 0.0476, 'sd': [2.74, 3.4, 8.57]}}
