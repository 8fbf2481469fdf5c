"""Site classifier table, fitted on phantom truth by benchmarks/fit_site_table.py.

Per site: mean and SD of |L-R|, A-P, I-S offsets from the landmark (the carotid pair's midpoint), in
mm; prior = share of samples. Fitted by benchmarks/fit_site_table.py on 58 phantom
cases at 288 x 288 x 96, seeds disjoint from the evaluation's (2): ``generate_dataset(seed=7)`` (24 cases)
and ``generate_dataset(seed=11, n_aneurysms=3, treated=False)`` (14), classic anatomy, and
``aneurysmseg phantom DIR --cases 20 --seed 13 --shape 288 288 96 --set 'anatomy="varied"'`` (20, more
circle-of-Willis variants). 84 aneurysms; leave-one-case-out: site group 0.96, fine site 0.85, side 0.94
(the former landmark, the centroid of all thick trunks, on the same cases: 0.90, 0.77, 0.92)."""

SITE_TABLE = {'AcomA': {'mean': [2.24, -2.75, 19.76], 'n': 16, 'prior': 0.1905, 'sd': [2.17, 4.57, 6.84]},
 'BA_tip': {'mean': [1.73, 23.74, 17.49], 'n': 6, 'prior': 0.0714, 'sd': [2.0, 4.6, 6.29]},
 'ICA_PcomA': {'mean': [14.96, 6.93, 7.47], 'n': 15, 'prior': 0.1786, 'sd': [2.0, 2.0, 4.68]},
 'ICA_term': {'mean': [15.64, 9.89, 17.77], 'n': 3, 'prior': 0.0357, 'sd': [2.0, 2.16, 3.16]},
 'MCA_bif': {'mean': [38.06, 16.41, 16.02], 'n': 24, 'prior': 0.2857, 'sd': [3.91, 5.32, 6.01]},
 'Pericallosal': {'mean': [2.79, -8.27, 53.3], 'n': 5, 'prior': 0.0595, 'sd': [3.14, 6.44, 3.89]},
 'bend_A2': {'mean': [2.98, -11.3, 43.34], 'n': 2, 'prior': 0.0238, 'sd': [4.0, 4.0, 4.0]},
 'bend_ICA': {'mean': [16.46, -7.83, 5.4], 'n': 9, 'prior': 0.1071, 'sd': [2.36, 6.76, 10.45]},
 'bend_M1': {'mean': [30.62, 9.06, 20.72], 'n': 4, 'prior': 0.0476, 'sd': [2.74, 3.4, 8.57]}}
