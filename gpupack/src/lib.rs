//! gpupack's command line as a library: the `estimate` and `simulate`
//! subcommands, and the workload files `simulate` replays (which the
//! end-to-end tests replay through kube-scheduler's sequence too).

pub mod estimate;
pub mod simulate;
