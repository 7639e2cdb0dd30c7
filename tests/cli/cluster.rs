//! A real cluster on loopback: `whet cluster scheduler` and two `whet cluster executor` processes, a MinHash
//! dedup sent with `whet curate --cluster`, and one executor killed with `kill -9` while the cluster works on
//! it. The output must appear whole, equal to the local run's, or not at all.

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

#[test]
fn a_dedup_survives_an_executor_killed_mid_run_or_leaves_nothing() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pipeline = |name: &str| {
        let file = dir.path().join(format!("{name}.toml"));
        let out = dir.path().join(name).join("out.parquet");
        std::fs::write(
            &file,
            format!(
                "input = {:?}\noutput = {:?}\nseed = 2\n\n[[stage]]\nrun = \"dedup\"\nmethod = \"minhash\"\n\
                 threshold = 0.7\n",
                data.join("t0-templates").display().to_string(),
                out.display().to_string()
            ),
        )
        .unwrap();
        (file, out)
    };
    let (local_pipeline, local) = pipeline("local");
    whet_ok(&["curate", local_pipeline.to_str().unwrap()]);

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

    let (remote_pipeline, remote) = pipeline("remote");
    let staged = dir.path().join("remote/out.parquet.stages/cluster/01-dedup-rows.parquet");
    let cluster = format!("df://{scheduler_address}");
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_whet"))
        .args(["curate", remote_pipeline.to_str().unwrap(), "--cluster", &cluster])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the rows are staged the cluster is hashing them: the kill lands mid-job.
    while !staged.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "the rows were never staged for the cluster");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // kill -9: no goodbye to the scheduler, shuffle files gone with it.
    doomed.0.kill().unwrap();
    doomed.0.wait().unwrap();
    let killed_at = started.elapsed().as_secs_f64();
    let finished = run.wait_with_output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    let logs = || {
        ["scheduler.log", "executor-0.log", "executor-1.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(dir.path().join(f)).unwrap_or_default()))
            .collect::<String>()
    };
    if finished.status.success() {
        let manifest = |out: &Path| {
            let text = std::fs::read_to_string(format!("{}.manifest.json", out.display())).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        let (l, r) = (manifest(&local), manifest(&remote));
        assert_eq!(l["output"]["xxh3_128"], r["output"]["xxh3_128"], "the cluster's output differs from the local one");
        assert_eq!(l["rows"], r["rows"], "the rows accounted for differ");
        let rejected = |out: &Path| std::fs::read(format!("{}.rejected.jsonl", out.display())).unwrap();
        assert!(rejected(&local) == rejected(&remote), "the rejected rows differ");
        assert!(!staged.exists(), "the staged rows were left behind");
        eprintln!("killed at {killed_at:.1} s; the dedup finished on the surviving executor at {seconds:.1} s");
    } else {
        assert!(!remote.exists(), "a failed run left an output behind:\n{stderr}");
        assert!(stderr.contains("error"), "the failure says nothing:\n{stderr}\n{}", logs());
        panic!("the dedup failed when an executor died ({seconds:.1} s):\n{stderr}\n{}", logs());
    }
    // The cluster still answers with one executor.
    let t0 = dir.path().join("t0.parquet");
    whet_ok(&["convert", data.join("t0-templates").to_str().unwrap(), t0.to_str().unwrap()]);
    let table = format!("t0={}", t0.display());
    let after = whet(&["sql", "SELECT count(*) AS n FROM t0", "--table", &table, "--cluster", &cluster]);
    assert!(after.status.success(), "{}\n{}", String::from_utf8_lossy(&after.stderr), logs());
}
