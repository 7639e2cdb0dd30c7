use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

/// Run a Ballista cluster made of whet: a scheduler, and executors on every machine, that know whetstone's
/// functions. Then `whet sql … --cluster df://HOST:PORT` and `whet curate … --cluster df://HOST:PORT` run there.
/// Tables must be Parquet at a path every executor sees (shared storage).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(clap::Subcommand)]
enum Role {
    /// The scheduler: plans queries and hands their tasks to executors.
    Scheduler {
        /// Address and port to listen on.
        #[arg(long, default_value = "0.0.0.0:50050")]
        bind: SocketAddr,
        /// Seconds an executor may miss heartbeats before it is taken for dead and its tasks run elsewhere.
        #[arg(long, default_value_t = 60)]
        executor_timeout: u64,
    },
    /// An executor: runs tasks, keeping shuffle files in its work folder.
    Executor {
        /// The scheduler, as HOST:PORT or df://HOST:PORT.
        #[arg(long)]
        scheduler: String,
        /// The address other executors and the driver reach this one at.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port of its Arrow Flight service (shuffle reads).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// Port of its gRPC service.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks at once [default: the cores].
        #[arg(long)]
        slots: Option<usize>,
        /// Where shuffle files go [default: a temporary folder].
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, default_value_t = 5)]
        heartbeat: u64,
    },
}

#[cfg(feature = "cluster")]
pub fn run(a: Args) -> Result<()> {
    use whetstone::curation::sql::cluster::{run_executor, run_scheduler, ExecutorOptions};
    match a.role {
        Role::Scheduler { bind, executor_timeout } => {
            // 0.0.0.0 listens everywhere but is no address to join: name this machine instead.
            let join = match bind.ip().is_unspecified() {
                true => format!("THIS-HOST:{}", bind.port()),
                false => bind.to_string(),
            };
            eprintln!("whet cluster scheduler on {bind}: executors join with --scheduler {join}");
            run_scheduler(bind, executor_timeout)?
        }
        Role::Executor { scheduler, host, port, grpc_port, slots, work_dir, heartbeat } => {
            let slots = slots.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            eprintln!("whet cluster executor {host}:{port}, {slots} slots, joining {scheduler}");
            run_executor(ExecutorOptions {
                scheduler,
                bind_host: host,
                port,
                grpc_port,
                slots,
                work_dir,
                heartbeat_seconds: heartbeat,
            })?
        }
    }
    Ok(())
}

#[cfg(not(feature = "cluster"))]
pub fn run(_: Args) -> Result<()> {
    anyhow::bail!("this whet was built without clusters: build it with `cargo build --release --features cluster`")
}
