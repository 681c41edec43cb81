"""Design-space exploration: joint, constrained, multi-objective search over KVNAND-style designs.

space.py      the YAML search space (parameters, workload, objectives, constraints, published designs)
objectives.py metrics of a design over its workload; constraints; Pareto dominance
study.py      the optuna study: storage (journal file or PostgreSQL), sampler, workers, global budget, no design
              evaluated twice, crash recovery
grid.py       exhaustive evaluation of a small discrete space
export.py     trials.csv, pareto.csv, known_designs.csv, Pareto scatter, Fig. 15-style heatmap
(the `kvnand dse run|pareto|grid|show` commands are kvnand/cli/dse.py)

Where the paper (KVNAND Sec. IV-B) sweeps variant and G1/G2 split and picks the lowest latency, a study
here optimizes latency, energy, lifetime and cost jointly under capacity, power, area and cost limits,
and reports which published configurations its Pareto front dominates.
"""
