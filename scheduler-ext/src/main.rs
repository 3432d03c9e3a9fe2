//! `gpupack-scheduler-ext`: the kube-scheduler extender service.

fn main() -> anyhow::Result<()> {
    scheduler_ext::cli::main()
}
