//! A real control plane (etcd + kube-apiserver, and the kube-controller-manager's garbage
//! collector when its binary is there), started once per test binary and stopped when the
//! process ends, however it ends.
//!
//! Binaries follow envtest's convention: `KUBEBUILDER_ASSETS` names a folder holding
//! `kube-apiserver` and `etcd` (what `setup-envtest use -p path` prints). Without it, the xz
//! archives in `../shared/envtest/` beside the checkout are unpacked once (etcd 3.6 from there,
//! else etcd from `PATH`).
//!
//! `TENANTCRED_ENVTEST=off` skips the real server; `TENANTCRED_ENVTEST=require` (CI) turns a
//! missing control plane into a failure instead of a skip.
//!
//! Cleanup does not depend on destructors (statics are never dropped, and a panicking or killed
//! test binary runs none): a sentinel shell holds the read end of a pipe whose write end only
//! this process holds. When the process exits, for any reason, the kernel closes it; the
//! sentinel wakes, stops every process it was told about and removes the working folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    /// Whether owner-reference garbage collection runs (it needs kube-controller-manager,
    /// which `setup-envtest` does not download).
    pub garbage_collector: bool,
    /// The write end of the sentinel's pipe; never written, only held.
    _sentinel: Mutex<ChildStdin>,
}

static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use; `Err` says why there is none.
pub fn control_plane() -> Result<&'static ControlPlane, String> {
    PLANE
        .get_or_init(|| {
            let mode = std::env::var("TENANTCRED_ENVTEST").unwrap_or_default();
            if mode == "off" {
                return Err("TENANTCRED_ENVTEST=off".into());
            }
            let started = Assets::find().and_then(|a| start(&a));
            match started {
                Err(why) if mode == "require" => panic!("TENANTCRED_ENVTEST=require, but: {why}"),
                other => other,
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Says a real-server test is skipped, where `cargo test` shows it (libtest captures print!).
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "real-server {test} SKIPPED: {why}");
}

struct Assets {
    apiserver: PathBuf,
    etcd: PathBuf,
    controller_manager: Option<PathBuf>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

impl Assets {
    fn find() -> Result<Self, String> {
        if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from) {
            let apiserver = dir.join("kube-apiserver");
            let etcd = dir.join("etcd");
            if !apiserver.is_file() || !etcd.is_file() {
                return Err(format!(
                    "KUBEBUILDER_ASSETS={} holds no kube-apiserver and etcd",
                    dir.display()
                ));
            }
            let kcm = dir.join("kube-controller-manager");
            return Ok(Self {
                apiserver,
                etcd,
                controller_manager: kcm.is_file().then_some(kcm),
            });
        }
        let shared = repo_root().join("../shared/envtest");
        if !shared.join("kube-apiserver.xz").is_file() {
            return Err(
                "no control plane: set KUBEBUILDER_ASSETS to a folder with kube-apiserver and etcd \
                        (setup-envtest use -p path)"
                    .into(),
            );
        }
        let cache = std::env::temp_dir().join("tenantcred-envtest-bin");
        // The shared etcd 3.6 serves streaming lists; Debian's 3.4 on PATH does everything else.
        let etcd = match unpack(&shared.join("etcd.xz"), &cache) {
            Ok(etcd) => etcd,
            Err(_) => on_path("etcd").ok_or("no etcd: neither ../shared/envtest/etcd.xz nor etcd on PATH")?,
        };
        Ok(Self {
            apiserver: unpack(&shared.join("kube-apiserver.xz"), &cache)?,
            etcd,
            controller_manager: unpack(&shared.join("kube-controller-manager.xz"), &cache).ok(),
        })
    }
}

/// Unpacks `NAME.xz` into `cache/NAME` once (atomically, so concurrent binaries agree).
fn unpack(xz: &Path, cache: &Path) -> Result<PathBuf, String> {
    let name = xz
        .file_stem()
        .ok_or("archive without a name")?
        .to_string_lossy()
        .into_owned();
    let out = cache.join(&name);
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let tmp = cache.join(format!("{name}.{}.tmp", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(xz)
        .stdout(file)
        .status()
        .map_err(|e| format!("xz: {e}"))?;
    if !status.success() {
        return Err(format!("xz -dc {} failed", xz.display()));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// A CA, a serving certificate for 127.0.0.1, and the ServiceAccount signing key pair.
fn pki(dir: &Path) -> Result<(), String> {
    let p = |f: &str| dir.join(f);
    let openssl = || Command::new("openssl");
    run(openssl().args(["genrsa", "-out"]).arg(p("sa.key")).arg("2048"))?;
    run(openssl()
        .args(["rsa", "-pubout", "-in"])
        .arg(p("sa.key"))
        .arg("-out")
        .arg(p("sa.pub")))?;
    run(openssl()
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=envtest-ca",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")))?;
    run(openssl()
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
        ])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))?;
    std::fs::write(p("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").map_err(|e| e.to_string())?;
    run(openssl()
        .args(["x509", "-req", "-days", "30", "-CAcreateserial", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext"))
        .arg("-out")
        .arg(p("server.crt")))
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File, String> {
    std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())
}

/// Starts the sentinel first, so whatever is started after it is stopped with the process.
fn sentinel(dir: &Path) -> Result<(Child, ChildStdin), String> {
    let keep = std::env::var_os("TENANTCRED_ENVTEST_KEEP").is_some();
    let script = format!(
        "read _ignored; for p in $(cat '{pids}' 2>/dev/null); do kill $p 2>/dev/null; done; sleep 2; \
         for p in $(cat '{pids}' 2>/dev/null); do kill -9 $p 2>/dev/null; done; {rm}",
        pids = dir.join("pids").display(),
        rm = if keep {
            String::new()
        } else {
            format!("rm -rf '{}'", dir.display())
        }
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sentinel: {e}"))?;
    let stdin = child.stdin.take().ok_or("sentinel without stdin")?;
    Ok((child, stdin))
}

fn track(dir: &Path, child: &Child) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pids"))
        .map_err(|e| e.to_string())?;
    writeln!(f, "{}", child.id()).map_err(|e| e.to_string())
}

fn start(assets: &Assets) -> Result<ControlPlane, String> {
    let dir = std::env::temp_dir().join(format!("tenantcred-envtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etcd")).map_err(|e| e.to_string())?;
    let (_sentinel_child, sentinel_stdin) = sentinel(&dir)?;
    pki(&dir)?;
    let token = format!("admin-{:032x}", rand_u128());
    std::fs::write(dir.join("tokens.csv"), format!("{token},admin,admin,system:masters\n"))
        .map_err(|e| e.to_string())?;

    let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
    let etcd = Command::new(&assets.etcd)
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            "--quota-backend-bytes=4294967296".into(),
        ])
        .stdout(log_file(&dir, "etcd")?)
        .stderr(log_file(&dir, "etcd.err")?)
        .spawn()
        .map_err(|e| format!("etcd: {e}"))?;
    track(&dir, &etcd)?;
    let p = |f: &str| dir.join(f).display().to_string();
    let apiserver = Command::new(&assets.apiserver)
        .args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--tls-cert-file={}", p("server.crt")),
            format!("--tls-private-key-file={}", p("server.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
        ])
        .stdout(log_file(&dir, "kube-apiserver")?)
        .stderr(log_file(&dir, "kube-apiserver.err")?)
        .spawn()
        .map_err(|e| format!("kube-apiserver: {e}"))?;
    track(&dir, &apiserver)?;
    let server = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\n\
             users:\n- name: admin\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: admin, namespace: default}}\n\
             current-context: envtest\n",
            ca = p("ca.crt")
        ),
    )
    .map_err(|e| e.to_string())?;
    wait_ready(&dir, &server, &token)?;
    let garbage_collector = match &assets.controller_manager {
        Some(kcm) => {
            let child = Command::new(kcm)
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args([
                    "--controllers=garbagecollector,namespace,serviceaccount".to_owned(),
                    format!("--service-account-private-key-file={}", p("sa.key")),
                    format!("--root-ca-file={}", p("ca.crt")),
                    "--secure-port=0".into(),
                    "--leader-elect=false".into(),
                ])
                .stdout(log_file(&dir, "kube-controller-manager")?)
                .stderr(log_file(&dir, "kube-controller-manager.err")?)
                .spawn()
                .map_err(|e| format!("kube-controller-manager: {e}"))?;
            track(&dir, &child)?;
            true
        }
        None => false,
    };
    Ok(ControlPlane {
        dir,
        kubeconfig,
        server,
        garbage_collector,
        _sentinel: Mutex::new(sentinel_stdin),
    })
}

/// Polls `/readyz` with curl (the machine's, so no TLS stack is needed before the server is up).
fn wait_ready(dir: &Path, server: &str, token: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let ok = Command::new("curl")
            .args(["-sf", "--max-time", "2", "--cacert"])
            .arg(dir.join("ca.crt"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{server}/readyz"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = std::fs::read_to_string(dir.join("kube-apiserver.err.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(5).collect();
    Err(format!("kube-apiserver not ready in 90 s: {tail:?}"))
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(Instant::now());
    (u128::from(a) << 64) | u128::from(b)
}
