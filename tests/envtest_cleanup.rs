//! The test kit's control plane dies with the test binary that started it, whether a test
//! panicked or the process was killed outright: no orphan processes, no leftover ports or files.
//! The test runs itself as a child process, lets it start a control plane and die, then looks.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use tenantcred_testkit::envtest;

const CHILD: &str = "TENANTCRED_CLEANUP_CHILD";

/// In the child: start the control plane, say what was started, then die as told.
fn child(how: &str) {
    let plane = match envtest::control_plane() {
        Ok(p) => p,
        Err(why) => {
            println!("\n@@SKIP {why}");
            return;
        }
    };
    let pids = std::fs::read_to_string(plane.dir.join("pids")).unwrap_or_default();
    println!("\n@@DIR {}", plane.dir.display());
    println!("@@PIDS {}", pids.split_whitespace().collect::<Vec<_>>().join(" "));
    println!("@@SERVER {}", plane.server);
    let _ = std::io::stdout().flush();
    match how {
        "abort" => std::process::abort(),
        _ => panic!("a failing test"),
    }
}

fn alive(pid: &str) -> bool {
    // A zombie has ended; only its parent (or init) has yet to read its exit status.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

fn dies_cleanly(how: &str) {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "the_control_plane_goes_with_the_test_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, how)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(&format!("@@{key} ")).map(|(_, v)| v))
            .map(str::to_owned)
    };
    if let Some(why) = field("SKIP") {
        envtest::skipped("the_control_plane_goes_with_the_test_process", &why);
        return;
    }
    assert!(!out.status.success(), "the child was to die ({how})");
    let (Some(dir), Some(pids), Some(server)) = (field("DIR"), field("PIDS"), field("SERVER")) else {
        panic!(
            "the child started no control plane:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert!(pids.len() >= 2, "etcd and kube-apiserver at least: {pids:?}");
    let port: u16 = server.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: Vec<&&str> = pids.iter().filter(|p| alive(p)).collect();
        let dir_left = std::path::Path::new(&dir).exists();
        let port_taken = std::net::TcpListener::bind(("127.0.0.1", port)).is_err();
        if running.is_empty() && !dir_left && !port_taken {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after the child died ({how}): still running {running:?}, folder left {dir_left}, port taken {port_taken}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_control_plane_goes_with_the_test_process() {
    if let Ok(how) = std::env::var(CHILD) {
        child(&how);
        return;
    }
    dies_cleanly("panic");
    dies_cleanly("abort");
}
