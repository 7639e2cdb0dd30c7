//! Code execution: runs a response's Python code against the row's tests in a sandboxed subprocess.
//!
//! The program is the response's first fenced code block (or the whole response when it has none) followed
//! by the tests (the row's reference, e.g. MBPP's `assert` lines or a HumanEval `check` call). It passes when
//! the interpreter exits 0 within the time limit. The candidate is untrusted code, so it runs:
//!
//! - in new network and PID namespaces: no network but loopback, and when the sandbox's first process ends
//!   or is killed, the kernel kills every process it started (a fork bomb or a daemon cannot outlive it);
//! - as user `nobody` when whetstone runs as root (root ignores the process-count limit), else in a new user
//!   namespace;
//! - under limits on processes (a fork bomb stalls at the limit), address space, CPU seconds, file size and
//!   open files, in its own session, with a wall-clock timeout after which everything is killed.
//!
//! A timeout, a crash, a limit hit or a failed test is a zero reward whose reason says which; a machine that
//! cannot create the namespaces gets a zero reward saying so, never an unsandboxed run.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Candidate, Reward, Score};

/// The code-execution reward's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonTests {
    /// The interpreter; the sandbox user must be able to run it.
    pub python: PathBuf,
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_processes: u64,
}

impl Default for PythonTests {
    fn default() -> Self {
        // The system interpreter: one under a home folder (pyenv) is out of reach of the sandbox's user.
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("python3"));
        PythonTests { python, timeout: Duration::from_secs(5), memory_bytes: 1 << 30, max_processes: 32 }
    }
}

/// The code of a response: its first fenced block (any language tag), else all of it.
pub fn code_of(response: &str) -> &str {
    let Some(start) = response.find("```") else { return response };
    let after = &response[start + 3..];
    let body = after.find('\n').map_or(after, |i| &after[i + 1..]);
    body.find("```").map_or(body, |end| &body[..end])
}

/// How the sandboxed run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Exited(i32),
    /// Killed by a signal (a limit: SIGXCPU for CPU time, SIGKILL for memory or the timeout).
    Signalled(i32),
    TimedOut,
    /// The sandbox could not be set up (what failed, the OS error).
    NoSandbox(String),
}

/// What a sandboxed run printed and how it ended.
#[derive(Debug, Clone)]
pub struct Run {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

/// The last `n` bytes of a file, as text.
fn tail(file: &mut std::fs::File, n: u64) -> String {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(n)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

impl PythonTests {
    /// Runs `program` with the interpreter in the sandbox and waits at most the timeout.
    pub fn run(&self, program: &str) -> std::io::Result<Run> {
        let dir = tempfile::Builder::new().prefix("whetstone-code-").tempdir()?;
        let path = dir.path().join("program.py");
        std::fs::write(&path, program)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        let (mut stdout, mut stderr) = (tempfile::tempfile()?, tempfile::tempfile()?);
        let mut command = std::process::Command::new(&self.python);
        command
            .args(["-I", "-B"])
            .arg(&path)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .stdout(stdout.try_clone()?)
            .stderr(stderr.try_clone()?);
        let started = Instant::now();
        let outcome = sandbox::run(&mut command, self)?;
        Ok(Run {
            outcome,
            stdout: tail(&mut stdout, 4096),
            stderr: tail(&mut stderr, 4096),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The last line of an error report ("AssertionError", "NameError: name 'f' is not defined").
fn last_line(text: &str) -> &str {
    text.lines().rev().find(|l| !l.trim().is_empty()).map_or("", str::trim)
}

impl Reward for PythonTests {
    fn name(&self) -> String {
        "code".into()
    }

    fn score(&self, candidate: &Candidate) -> Score {
        let Some(tests) = candidate.reference else {
            return Score::fail("the row has no tests (its reference) to run the code against");
        };
        let program = format!("{}\n\n{}\n", code_of(candidate.response), tests);
        let run = match self.run(&program) {
            Ok(run) => run,
            Err(e) => return Score::fail(format!("could not run {}: {e}", self.python.display())),
        };
        let limit = self.timeout.as_secs_f64();
        match run.outcome {
            Outcome::Exited(0) => Score::pass(format!("the tests passed in {:.2} s", run.seconds)),
            Outcome::Exited(code) => {
                let error = last_line(&run.stderr);
                Score::fail(if error.is_empty() {
                    format!("exit code {code}")
                } else {
                    format!("tests failed: {}", error.chars().take(200).collect::<String>())
                })
            }
            Outcome::TimedOut => Score::fail(format!("timed out after {limit} s")),
            Outcome::Signalled(signal) => Score::fail(match signal {
                libc::SIGXCPU => format!("CPU limit ({limit} s) exceeded"),
                libc::SIGXFSZ => "file size limit exceeded".to_string(),
                libc::SIGKILL => "killed (memory or process limit)".to_string(),
                libc::SIGSEGV => "crashed (segmentation fault)".to_string(),
                s => format!("killed by signal {s}"),
            }),
            Outcome::NoSandbox(why) => Score::fail(format!("not run: the sandbox could not be set up ({why})")),
        }
    }
}

#[cfg(target_os = "linux")]
mod sandbox {
    //! The namespaces, user and limits, set up between fork and exec (only async-signal-safe calls there).

    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::time::Instant;

    use super::{Outcome, PythonTests};

    /// Exit codes of the sandbox's waiter for its own failures, with what failed.
    const SETUP_FAILURES: [(i32, &str); 5] = [
        (120, "unshare (network, PID and, without root, user namespaces)"),
        (121, "fork into the PID namespace"),
        (122, "switch to user nobody"),
        (123, "set resource limits"),
        (124, "parent-death signal"),
    ];
    const NOBODY: libc::uid_t = 65534;

    fn limit(resource: libc::__rlimit_resource_t, value: u64) -> bool {
        let l = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: setrlimit with a valid pointer.
        unsafe { libc::setrlimit(resource, &l) == 0 }
    }

    /// The child of `waiter` (the sandbox's init, as this namespace numbers it), from /proc.
    fn init_of(waiter: libc::pid_t) -> Option<libc::pid_t> {
        let children = std::fs::read_to_string(format!("/proc/{waiter}/task/{waiter}/children")).ok();
        if let Some(pid) = children.as_deref().and_then(|c| c.split_whitespace().next()?.parse().ok()) {
            return Some(pid);
        }
        // Kernels without the `children` file: any process whose parent is the waiter.
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`: the command name may hold spaces, so read after its closing parenthesis.
            let ppid: libc::pid_t = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == waiter).then_some(pid)
        })
    }

    pub fn run(command: &mut std::process::Command, limits: &PythonTests) -> std::io::Result<Outcome> {
        let cpu = limits.timeout.as_secs().max(1) + 1;
        let (memory, processes) = (limits.memory_bytes, limits.max_processes);
        // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe calls
        // (syscalls, fork, waitpid, _exit); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let root = libc::geteuid() == 0;
                libc::setsid();
                let mut flags = libc::CLONE_NEWNET | libc::CLONE_NEWPID;
                if !root {
                    flags |= libc::CLONE_NEWUSER;
                }
                if libc::unshare(flags) != 0 {
                    libc::_exit(120);
                }
                // The first child in the new PID namespace is its init: when it dies, so does everything in
                // the namespace. This process waits for it and passes its status on.
                let pid = libc::fork();
                if pid < 0 {
                    libc::_exit(121);
                }
                if pid > 0 {
                    // Closing the descriptors (std's exec-error pipe among them) lets `spawn` return now rather
                    // than when this waiter ends.
                    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                        (3..1024).for_each(|fd| {
                            libc::close(fd);
                        });
                    }
                    let mut status = 0;
                    while libc::waitpid(pid, &mut status, 0) < 0 {}
                    if libc::WIFEXITED(status) {
                        libc::_exit(libc::WEXITSTATUS(status));
                    }
                    // A signal: re-raised on this process so the caller sees it, with no core dump.
                    let signal = libc::WTERMSIG(status);
                    libc::signal(signal, libc::SIG_DFL);
                    limit(libc::RLIMIT_CORE, 0);
                    libc::kill(libc::getpid(), signal);
                    libc::_exit(128 + signal);
                }
                // Killed with the waiter (the timeout kills the waiter). Its parent is outside the namespace, so
                // getppid says 0 here and cannot tell whether the waiter already died; it lives until this ends.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    libc::_exit(124);
                }
                if root
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(NOBODY) != 0
                        || libc::setuid(NOBODY) != 0)
                {
                    libc::_exit(122);
                }
                let limited = limit(libc::RLIMIT_NPROC, processes)
                    && limit(libc::RLIMIT_AS, memory)
                    && limit(libc::RLIMIT_CPU, cpu)
                    && limit(libc::RLIMIT_FSIZE, 1 << 20)
                    && limit(libc::RLIMIT_NOFILE, 64)
                    && limit(libc::RLIMIT_CORE, 0);
                if !limited {
                    libc::_exit(123);
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let deadline = Instant::now() + limits.timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                if let Some(signal) = status.signal() {
                    return Ok(Outcome::Signalled(signal));
                }
                let code = status.code().unwrap_or(-1);
                if let Some((_, what)) = SETUP_FAILURES.iter().find(|(c, _)| *c == code) {
                    return Ok(Outcome::NoSandbox(format!("{what} failed")));
                }
                return Ok(Outcome::Exited(code));
            }
            if Instant::now() >= deadline {
                // Killing the namespace's init kills every process of the sandbox; the init's exit waits until
                // they are gone, then the waiter's wait returns, so nothing outlives this call (a fork bomb's
                // processes would otherwise still count against the next run's process limit).
                let waiter = child.id() as libc::pid_t;
                match init_of(waiter) {
                    // SAFETY: kill with a pid read from /proc just now: the waiter's only child.
                    Some(init) => unsafe { libc::kill(init, libc::SIGKILL) },
                    // SAFETY: the waiter's process group (setsid made its pid the group id).
                    None => unsafe { libc::kill(-waiter, libc::SIGKILL) },
                };
                let _ = child.wait();
                return Ok(Outcome::TimedOut);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sandbox {
    use super::{Outcome, PythonTests};

    pub fn run(_: &mut std::process::Command, _: &PythonTests) -> std::io::Result<Outcome> {
        Ok(Outcome::NoSandbox("code runs only in Linux namespaces; this is not Linux".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_the_first_fenced_block() {
        assert_eq!(code_of("Here:\n```python\ndef f():\n    return 1\n```\nDone."), "def f():\n    return 1\n");
        assert_eq!(code_of("def f(): return 1"), "def f(): return 1");
        assert_eq!(code_of("```\nx = 1"), "x = 1");
    }

    /// Processes whose command line names `marker` (the sandbox's program lives in a uniquely named folder).
    fn processes_running(marker: &str) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).contains(marker))
            .count()
    }

    fn score(reward: &PythonTests, code: &str, tests: &str) -> (Score, f64) {
        let started = Instant::now();
        let s = reward.score(&Candidate { prompt: "", response: code, reference: Some(tests), ..Default::default() });
        (s, started.elapsed().as_secs_f64())
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn untrusted_code_is_contained_and_every_failure_has_its_reason() {
        let reward = PythonTests { timeout: Duration::from_secs(2), ..Default::default() };
        let tests = "assert add(2, 3) == 5";
        let (s, _) = score(&reward, "```python\ndef add(a, b):\n    return a + b\n```", tests);
        assert_eq!(s.value, 1.0, "{}", s.reason);
        let (s, _) = score(&reward, "def add(a, b):\n    return a - b", tests);
        assert_eq!((s.value, s.reason.as_str()), (0.0, "tests failed: AssertionError"));
        assert!(score(&reward, "x = ", tests).0.reason.contains("SyntaxError"));

        // An infinite loop: stopped at the time limit, a zero reward with its reason.
        let (s, seconds) = score(&reward, "while True:\n    pass", tests);
        assert_eq!(s.value, 0.0);
        assert!(s.reason.contains("timed out") || s.reason.contains("CPU limit"), "{} after {seconds} s", s.reason);
        assert!(seconds < 4.0, "{seconds} s");

        // A fork bomb that swallows the errors at the process limit, and a child in a session of its own
        // that would outlive its parent: both gone when the reward returns.
        let marker = "whetstone-code-";
        let before = processes_running(marker);
        let bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
        let (s, seconds) = score(&reward, bomb, tests);
        assert_eq!(s.value, 0.0);
        assert!(s.reason.contains("timed out"), "{}", s.reason);
        assert!(seconds < 4.0, "{seconds} s");
        let daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n";
        let (s, _) = score(&reward, &format!("{daemon}\ndef add(a, b):\n    return a + b"), tests);
        assert_eq!(s.value, 1.0, "{}", s.reason);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(processes_running(marker), before, "no process of the sandbox is left");

        // No network, bounded memory.
        let dial = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)";
        let (s, _) = score(&reward, dial, tests);
        assert!(s.reason.contains("OSError") || s.reason.contains("unreachable"), "{}", s.reason);
        let (s, _) = score(&reward, "x = bytearray(4 << 30)", tests);
        assert!(s.reason.contains("MemoryError"), "{}", s.reason);
        assert!(reward
            .score(&Candidate { prompt: "", response: "1", ..Default::default() })
            .reason
            .contains("no tests"));
    }
}
