//! Apache Ballista clusters made of the `whet` binary: a scheduler and executors that know whetstone's
//! functions, an in-process cluster for tests and benchmarks, and a [`SqlSession`] that runs on either.
//!
//! Ballista's scheduler and executors decode a plan's functions against their own registry, so the stock
//! binaries cannot run `minhash()` or `vector_sum()`: both sides here are built with whetstone's functions
//! registered (the scheduler through its session builder, an executor through its function registry).
//! Tables on a cluster are files every executor reads at the same path (shared storage), as Parquet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use datafusion::execution::context::SessionState;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{functions, SqlSession};
use crate::error::{Error, Result};

/// The scheduler's default port, as Ballista's.
pub const DEFAULT_PORT: u16 = 50050;

/// whetstone's session settings on a Ballista config: text as `Utf8`, `partitions` tasks per stage.
pub fn cluster_config(partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new_with_ballista().with_target_partitions(partitions.max(1));
    let options = config.options_mut();
    options.execution.parquet.schema_force_view_types = false;
    options.sql_parser.map_string_types_to_utf8view = false;
    config
}

/// Ballista's session state for `config`, with whetstone's functions: what the scheduler plans with and the
/// executors decode plans against.
pub fn session_state(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let mut state = default_session_builder(config)?;
    for f in functions::scalar_functions() {
        state.register_udf(Arc::new(f))?;
    }
    for f in functions::aggregate_functions() {
        state.register_udaf(Arc::new(f))?;
    }
    Ok(state)
}

/// `df://HOST:PORT` (or `HOST:PORT`) as host and port.
pub fn parse_address(url: &str) -> Result<(String, u16)> {
    let rest = url.strip_prefix("df://").unwrap_or(url);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port = p.parse().map_err(|_| Error::Invalid(format!("{url}: the port {p:?} is not a number")))?;
            (h.to_string(), port)
        }
        None => (rest.to_string(), DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err(Error::Invalid(format!("{url}: give the scheduler as df://HOST:PORT")));
    }
    Ok((host, port))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("whetstone-cluster")
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the cluster runtime: {e}")))
}

fn ballista(e: impl std::fmt::Display) -> Error {
    Error::Sql(format!("cluster: {e}"))
}

/// Runs a scheduler until the process ends. `executor_timeout` is how long an executor may stay silent
/// before its tasks are run elsewhere.
pub fn run_scheduler(bind: SocketAddr, executor_timeout_seconds: u64) -> Result<()> {
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        executor_timeout_seconds,
        expire_dead_executor_interval_seconds: (executor_timeout_seconds / 3).max(1),
        no_executors_grace_period_seconds: executor_timeout_seconds,
        override_session_builder: Some(Arc::new(session_state)),
        ..Default::default()
    };
    runtime()?.block_on(async move {
        let cluster = BallistaCluster::new_from_config(&config).await.map_err(ballista)?;
        ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config)).await.map_err(ballista)
    })
}

/// Where and how an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler: String,
    /// Address other executors and the driver reach this one at (its Flight port), and its gRPC port.
    pub bind_host: String,
    pub port: u16,
    pub grpc_port: u16,
    /// Tasks at once.
    pub slots: usize,
    /// Where shuffle files go (local disk).
    pub work_dir: Option<PathBuf>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_seconds: u64,
}

/// Runs an executor until the process ends.
pub fn run_executor(o: ExecutorOptions) -> Result<()> {
    let (scheduler_host, scheduler_port) = parse_address(&o.scheduler)?;
    let state = session_state(cluster_config(o.slots)).map_err(ballista)?;
    let registry = BallistaFunctionRegistry::from(&state);
    let config = ExecutorProcessConfig {
        bind_host: o.bind_host.clone(),
        external_host: Some(o.bind_host.clone()),
        port: o.port,
        grpc_port: o.grpc_port,
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: o.slots.max(1),
        work_dir: o.work_dir.as_ref().map(|d| d.display().to_string()),
        executor_heartbeat_interval_seconds: o.heartbeat_seconds.max(1),
        override_function_registry: Some(Arc::new(registry)),
        override_config_producer: Some(Arc::new(|| cluster_config(1))),
        ..Default::default()
    };
    runtime()?.block_on(async move { start_executor_process(Arc::new(config)).await.map_err(ballista) })
}

/// A scheduler and `executors` executors in this process, on loopback ports the OS picks: what the tests
/// and the benchmark run queries on. They stop when the value is dropped.
pub struct LocalCluster {
    runtime: tokio::runtime::Runtime,
    pub url: String,
    partitions: usize,
}

impl LocalCluster {
    /// `slots` tasks at once per executor; queries split their work into `partitions` tasks per stage.
    pub fn start(executors: usize, slots: usize, partitions: usize) -> Result<Self> {
        let runtime = runtime()?;
        let state = session_state(cluster_config(partitions)).map_err(ballista)?;
        let url = runtime.block_on(async {
            let addr =
                ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state).await.map_err(ballista)?;
            for _ in 0..executors {
                let client = SchedulerGrpcClient::connect(format!("http://localhost:{}", addr.port()))
                    .await
                    .map_err(ballista)?;
                ballista_executor::new_standalone_executor_from_state(client, slots, &state).await.map_err(ballista)?;
            }
            Ok::<_, Error>(format!("df://localhost:{}", addr.port()))
        })?;
        Ok(LocalCluster { runtime, url, partitions })
    }

    /// A session whose queries run on this cluster.
    pub fn session(&self) -> Result<SqlSession> {
        let _guard = self.runtime.enter();
        SqlSession::connect_with(&self.url, self.partitions)
    }
}

impl SqlSession {
    /// A session whose queries run on the cluster whose scheduler is at `url` (`df://HOST:PORT`).
    pub fn connect(url: &str) -> Result<Self> {
        SqlSession::connect_with(url, 4)
    }

    /// As [`SqlSession::connect`], with `partitions` tasks per stage.
    pub fn connect_with(url: &str, partitions: usize) -> Result<Self> {
        let (host, port) = parse_address(url)?;
        let rt = runtime()?;
        let state = session_state(cluster_config(partitions)).map_err(ballista)?;
        let ctx: SessionContext = rt
            .block_on(SessionContext::remote_with_state(&format!("df://{host}:{port}"), state))
            .map_err(|e| Error::Sql(format!("cannot reach the scheduler at {url}: {e}")))?;
        SqlSession::with_runtime(ctx, rt, Some(format!("df://{host}:{port}")))
    }
}
