//! A real cluster on loopback: `whet cluster scheduler` and two `whet cluster executor` processes, a query
//! sent with `whet sql --cluster`, and one executor killed with `kill -9` while the query runs. The query's
//! output must appear whole, equal to the local run's, or not at all.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{shared_data, whet, whet_ok};

/// Kills its process when dropped, so a failing test leaves no cluster behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_whet"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start whet");
    Process(child)
}

/// Ports free now (the OS's pick), distinct.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "nothing listens on {port} after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sorted_rows(path: &Path) -> Vec<String> {
    let out =
        whet_ok(&["sql", "SELECT * FROM r ORDER BY source", "--table", &format!("r={}", path.display()), "-n", "1000"]);
    out.lines().map(str::to_string).filter(|l| !l.contains(" rows")).collect()
}

#[test]
fn a_query_survives_an_executor_killed_mid_run_or_leaves_nothing() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    // On a cluster a table is Parquet that every executor reads.
    let t0 = dir.path().join("t0.parquet");
    whet_ok(&["convert", data.join("t0-templates").to_str().unwrap(), t0.to_str().unwrap()]);
    let table = format!("t0={}", t0.display());
    // Enough work per row (embedding, MinHash) that the query is still running when an executor dies, and a
    // GROUP BY so that shuffle files on the dead executor are lost too.
    let query = "SELECT source, count(*) AS rows, sum(cardinality(minhash(prompt))) AS bands, \
                 round(sum(array_max(embed(prompt || response, 'hashing'))), 3) AS peak \
                 FROM t0 GROUP BY source";
    let local = dir.path().join("local.parquet");
    whet_ok(&["sql", query, "--table", &table, "--out", local.to_str().unwrap()]);

    let ports = free_ports(5);
    let scheduler_address = format!("127.0.0.1:{}", ports[0]);
    let _scheduler = spawn(
        &["cluster", "scheduler", "--bind", &scheduler_address, "--executor-timeout", "6"],
        &dir.path().join("scheduler.log"),
    );
    wait_for_port(ports[0]);
    let executor = |i: usize| {
        let work = dir.path().join(format!("work-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let (port, grpc) = (ports[1 + 2 * i].to_string(), ports[2 + 2 * i].to_string());
        let args = [
            "cluster",
            "executor",
            "--scheduler",
            &scheduler_address,
            "--port",
            &port,
            "--grpc-port",
            &grpc,
            "--slots",
            "1",
            "--heartbeat",
            "1",
            "--work-dir",
            work.to_str().unwrap(),
        ];
        let p = spawn(&args, &dir.path().join(format!("executor-{i}.log")));
        wait_for_port(ports[1 + 2 * i]);
        p
    };
    let mut doomed = executor(0);
    let _survivor = executor(1);
    // Both register with their first heartbeat.
    std::thread::sleep(Duration::from_secs(2));

    let remote = dir.path().join("remote.parquet");
    let cluster = format!("df://{scheduler_address}");
    let started = Instant::now();
    let query_run = Command::new(env!("CARGO_BIN_EXE_whet"))
        .args(["sql", query, "--table", &table, "--out", remote.to_str().unwrap(), "--cluster", &cluster])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // kill -9: no goodbye to the scheduler, shuffle files gone with it.
    doomed.0.kill().unwrap();
    doomed.0.wait().unwrap();
    let finished = query_run.wait_with_output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    let logs = || {
        ["scheduler.log", "executor-0.log", "executor-1.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(dir.path().join(f)).unwrap_or_default()))
            .collect::<String>()
    };
    if finished.status.success() {
        assert_eq!(sorted_rows(&remote), sorted_rows(&local), "the cluster's answer differs from the local one");
        let manifest = dir.path().join("remote.parquet.manifest.json");
        assert!(manifest.exists(), "no manifest beside the output");
        eprintln!("the query finished on the surviving executor in {seconds:.1} s");
    } else {
        assert!(!remote.exists(), "a failed query left an output behind:\n{stderr}");
        assert!(stderr.contains("error"), "the failure says nothing:\n{stderr}\n{}", logs());
        panic!("the query failed when an executor died ({seconds:.1} s):\n{stderr}\n{}", logs());
    }
    // The cluster still answers with one executor.
    let after = whet(&["sql", "SELECT count(*) AS n FROM t0", "--table", &table, "--cluster", &cluster]);
    assert!(after.status.success(), "{}\n{}", String::from_utf8_lossy(&after.stderr), logs());
}
