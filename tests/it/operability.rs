//! Issue 5: the CLI, the metrics endpoint and leader election.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tenantcred::cli::Output;
use tenantcred::controller::{self, Config, LeaseConfig, Shared};
use tenantcred::server::Readiness;
use tower::ServiceExt;

use tenantcred_testkit::chart::RELEASE_NAMESPACE;
use tenantcred_testkit::{Answer, Harness, Provider, eventually, scenarios};
use tenantcred_testkit::{Reason, Status, Type};

/// Runs `tenantcred check` off the async runtime (the provider server lives on it).
async fn check(
    provider: &Provider,
    args: &'static [&'static str],
    token: &'static str,
    via_env: bool,
) -> (i32, String) {
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || run_check(&provider, args, token, via_env))
        .await
        .expect("join")
}

fn run_check(provider: &Provider, args: &[&str], token: &str, via_env: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantcred"));
    cmd.arg("check").args(args).arg("--base-url").arg(&provider.base_url);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("TENANTCRED_TOKEN");
    if via_env {
        cmd.env("TENANTCRED_TOKEN", token);
    }
    let mut child = cmd.spawn().expect("run tenantcred check");
    if let Some(mut stdin) = child.stdin.take()
        && !via_env
    {
        let _ = writeln!(stdin, "{token}");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn check_gives_the_verdict_and_exit_code() {
    let p = Provider::start().await;
    p.answer("cs_live_good", Answer::Ok);
    p.answer("cs_live_revoked", Answer::UnauthorizedJson);
    p.answer(
        "cs_live_busy",
        Answer::RateLimitedHeaders {
            reset_at: 4_102_444_800,
        },
    );
    p.send_rate_headers(true);
    const ARGS: [&str; 5] = [
        "--provider",
        "charitystack",
        "--allow-insecure-http",
        "--probe-path",
        "/payments",
    ];
    let (code, out) = check(&p, &ARGS, "cs_live_good", false).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("verdict:      Valid") && out.contains("rate limit:   987 of 1000 left"),
        "{out}"
    );
    assert!(!out.contains("cs_live_good"), "the token is never printed: {out}");
    let (code, out) = check(&p, &ARGS, "cs_live_revoked", true).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Unauthorized"), "{out}");
    let (code, out) = check(&p, &ARGS, "cs_live_busy", true).await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("retry after:"), "{out}");
    let (code, out) = check(&p, &ARGS, "sk_wrong_prefix", true).await;
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("no request sent"));
    const STRICT: [&str; 4] = ["--provider", "charitystack", "--probe-path", "/payments"];
    let (code, out) = check(&p, &STRICT, "cs_live_good", true).await;
    assert_eq!(code, 64, "plain http refused without the flag: {out}");
    assert_eq!(p.hits("cs_live_busy"), 1);
}

async fn status_and_probe_now_through_the_api(h: Harness) {
    h.provider.answer("good", Answer::Ok);
    h.provider.answer("bad", Answer::UnauthorizedJson);
    h.source_secret("a-input", "good").await;
    h.create_credential(h.local("a")).await;
    h.source_secret("b-input", "bad").await;
    h.create_credential(h.local("b").tenant("globex").failure_threshold(1))
        .await;
    eventually(10, "a ready", async || {
        h.seen("a").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    eventually(10, "b degraded", async || {
        h.seen("b").await.is(Type::Degraded, Status::True, Reason::Unauthorized)
    })
    .await;
    let all = tenantcred::cli::StatusFilter::default();
    let table = tenantcred::cli::status(h.client.clone(), Some(&h.ns), &all, Output::Table)
        .await
        .expect("status");
    let first = table.lines().nth(1).unwrap_or_default();
    assert!(
        first.starts_with("b ") && first.contains("Degraded"),
        "worst first:\n{table}"
    );
    let json = tenantcred::cli::status(h.client.clone(), Some(&h.ns), &all, Output::Json)
        .await
        .expect("status -o json");
    // Filtered by the API server (the CRD's selectable fields), not by the client.
    let globex = tenantcred::cli::StatusFilter {
        tenant: Some("globex".into()),
        provider: Some("generic".into()),
    };
    let only_b = tenantcred::cli::status(h.client.clone(), Some(&h.ns), &globex, Output::Json)
        .await
        .expect("status --tenant globex --provider generic");
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&only_b).expect("valid JSON")["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["b"], "{only_b}");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed["items"][0]["name"], "b", "{json}");
    assert_eq!(parsed["items"][0]["health"], "Degraded", "{json}");
    assert_eq!(parsed["items"][1]["reason"], "TokenValid", "{json}");
    status_as_a_kubectl_plugin(&h).await;
    let msg = tenantcred::cli::probe_now(h.client.clone(), &h.ns, "a")
        .await
        .expect("probe-now");
    assert!(msg.contains("probe requested"));
    eventually(10, "probed again", async || h.provider.hits("good") == 2).await;
    let stamp = h.tac("a").await["metadata"]["annotations"]["tenantcred.dev/probe-requested-at"].clone();
    eventually(10, "echoed", async || {
        h.tac("a").await["status"]["lastHandledProbeRequest"] == stamp
    })
    .await;
}

/// `kubectl tenantcred status` as kubectl runs it: the binary under the plugin name, with
/// --kubeconfig, --context and -n. Needs a server another process can reach: the real one.
async fn status_as_a_kubectl_plugin(h: &Harness) {
    if h.backend != tenantcred_testkit::Backend::Real {
        h.skip("the plugin runs as another process, which cannot reach the in-process double");
        return;
    }
    let plane = tenantcred_testkit::envtest::control_plane()
        .expect("a real harness has a control plane")
        .kubeconfig
        .clone();
    let dir = tempdir();
    let plugin = dir.join("kubectl-tenantcred");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tenantcred"), &plugin).expect("symlink");
    // The envtest context is not the current one: only --context reaches the server.
    let kubeconfig = std::fs::read_to_string(&plane)
        .expect("kubeconfig")
        .replace("current-context: envtest", "current-context: nowhere");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");
    let ns = h.ns.clone();
    let run = move |args: Vec<String>| {
        Command::new(&plugin)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run the plugin")
    };
    let args = move |context: bool| {
        let mut a = vec!["status".to_owned(), "--kubeconfig".into(), path.display().to_string()];
        if context {
            a.extend(["--context".into(), "envtest".into()]);
        }
        a.extend(["-n".into(), ns.clone(), "-o".into(), "yaml".into()]);
        a
    };
    let (with, without) = tokio::task::spawn_blocking(move || (run(args(true)), run(args(false))))
        .await
        .expect("join");
    let out = String::from_utf8_lossy(&with.stdout);
    assert!(with.status.success(), "{out}{}", String::from_utf8_lossy(&with.stderr));
    let parsed: serde_json::Value = serde_yaml::from_str(&out).expect("valid YAML");
    assert_eq!(parsed["items"][0]["name"], "b", "{out}");
    assert!(
        !without.status.success(),
        "without --context the current context (nowhere) is used"
    );
    let help = Command::new(dir.join("kubectl-tenantcred"))
        .arg("--help")
        .output()
        .expect("help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("kubectl tenantcred"));
}

fn tempdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tenantcred-plugin-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn scrape(h: &Harness) -> String {
    let router = tenantcred::server::router(h.metrics.clone(), Arc::new(Readiness::default()));
    let resp = router
        .oneshot(
            http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn metrics_follow_live_credentials_and_drop_deleted_ones(h: Harness) {
    h.ready_credential(h.local("m"), "good").await;
    let series = format!(r#"{{namespace="{}",name="m",tenant="acme",provider="generic"}}"#, h.ns);
    // The series follow the status write within the same reconcile, a moment after the API has it.
    eventually(10, "the credential's series", async || {
        scrape(&h)
            .await
            .contains(&format!("tenantcred_credential_ready{series}"))
    })
    .await;
    let text = scrape(&h).await;
    assert!(
        text.contains(&format!("tenantcred_credential_ready{series} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!("tenantcred_credential_degraded{series} 0")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tenantcred_credential_last_successful_probe_timestamp_seconds{series}"
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"tenantcred_probe_total{provider="generic",result="Valid"} 1"#),
        "{text}"
    );
    assert!(text.contains("tenantcred_reconcile_total"), "{text}");
    assert!(
        text.contains(&format!("tenantcred_credential_last_probe_timestamp_seconds{series}")),
        "{text}"
    );
    assert!(
        text.contains(r#"tenantcred_kube_api_requests_total{verb="patch",resource="tenantapicredentials/status"}"#),
        "the operator's own API requests are counted: {text}"
    );
    assert!(
        !text.contains("good") && !text.contains("sha256:"),
        "no token or fingerprint in labels"
    );
    h.delete_tac("m").await;
    // The series go when the operator's watch reports the deletion, a moment after the API does.
    eventually(10, "series of a deleted credential disappear", async || {
        !scrape(&h).await.contains(r#"name="m""#)
    })
    .await;
}

fn replica(
    h: &Harness,
    identity: &str,
) -> (
    Arc<Readiness>,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let health = Arc::new(Readiness::default());
    let (config, lease) = replica_settings(h, identity);
    let shared = Shared::new(&config, Default::default(), health.clone()).expect("shared");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let client = h.operator_client();
    let task = tokio::spawn(async move { controller::run(client, config, shared, Some(lease), stop).await });
    (health, stop_tx, task)
}

/// How the replicas of these scenarios run: this test's namespace, a 2 s lease of its own.
fn replica_settings(h: &Harness, identity: &str) -> (Config, LeaseConfig) {
    let config = Config {
        namespaces: vec![h.ns.clone()],
        egress: tenantcred_testkit::local_egress(),
        lists: tenantcred_testkit::list_mode(),
        ..Config::default()
    };
    let lease = LeaseConfig {
        name: lease_name(h),
        namespace: RELEASE_NAMESPACE.into(),
        identity: identity.into(),
        duration_seconds: 2,
        grace_seconds: 1,
    };
    (config, lease)
}

fn lease_name(h: &Harness) -> String {
    format!("tenantcred-leader-{}", h.ns)
}

fn is_leader(h: &Readiness) -> bool {
    h.ready().is_ok_and(|m| m.starts_with("leader"))
}

async fn holder(h: &Harness) -> serde_json::Value {
    h.get_in("leases", RELEASE_NAMESPACE, &lease_name(h))
        .await
        .expect("lease")["spec"]["holderIdentity"]
        .clone()
}

/// Two replicas of the operator (as the chart's ServiceAccount on the real server); the harness's
/// own operator is stopped first, so only the replicas compete.
async fn one_leader_at_a_time_and_the_standby_takes_over(mut h: Harness) {
    h.stop_controller();
    h.provider.answer("t", Answer::Ok);
    let (h1, _stop1, t1) = replica(&h, "one");
    eventually(10, "first replica leads", async || is_leader(&h1)).await;
    let (h2, stop2, t2) = replica(&h, "two");
    eventually(10, "second replica knows it is standby", async || h2.ready().is_ok()).await;
    assert!(!is_leader(&h2));
    // Only the leader reconciles.
    h.source_secret("c-input", "t").await;
    h.create_credential(h.local("c")).await;
    eventually(10, "reconciled", async || {
        h.tac("c").await["status"]["conditions"].is_array()
    })
    .await;
    assert_eq!(h.provider.hits("t"), 1, "one probe: one active replica");
    assert_eq!(holder(&h).await, "one");
    // The leader dies without releasing: the standby takes over once the lease runs out.
    t1.abort();
    eventually(15, "standby takes over", async || is_leader(&h2)).await;
    assert_eq!(holder(&h).await, "two");
    // A graceful stop releases the lease.
    let _ = stop2.send(true);
    let result = tokio::time::timeout(Duration::from_secs(10), t2)
        .await
        .expect("stops")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    let released = holder(&h).await;
    assert!(released.is_null() || released == "", "released: {released}");
}

/// A replica on a runtime (and thread) of its own, which the test can freeze whole, as SIGSTOP
/// freezes a process: timers, the lease manager and in-flight requests stop together.
struct Frozen {
    health: Arc<Readiness>,
    tap: tenantcred_testkit::Tap,
    metrics: Arc<tenantcred::metrics::Metrics>,
    freeze: tokio::sync::mpsc::UnboundedSender<Duration>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Frozen {
    fn start(h: &Harness, identity: &str) -> Self {
        Self::start_with(h, identity, tenantcred_testkit::Tap::default())
    }

    fn start_with(h: &Harness, identity: &str, tap: tenantcred_testkit::Tap) -> Self {
        let health = Arc::new(Readiness::default());
        let metrics = Arc::new(tenantcred::metrics::Metrics::new());
        let make_client = h.client_factory(tap.clone(), metrics.clone());
        let (config, lease) = replica_settings(h, identity);
        let (freeze, mut frozen) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (health2, metrics2) = (health.clone(), metrics.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // Blocks the runtime's only thread: every task of this replica stands still.
                tokio::spawn(async move {
                    while let Some(d) = frozen.recv().await {
                        std::thread::sleep(d);
                    }
                });
                let shared = Shared::new(&config, metrics2, health2).expect("shared");
                let _ = controller::run(make_client(), config, shared, Some(lease), stopped).await;
            });
        });
        Self {
            health,
            tap,
            metrics,
            freeze,
            stop,
            thread: Some(thread),
        }
    }

    /// Probes this replica sent that have answered.
    fn probes(&self) -> u64 {
        self.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("tenantcred_probe_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The tap's (list, watch) requests for credentials and Secrets: the caches' lists.
    fn lists(&self) -> u64 {
        ["tenantapicredentials", "secrets"]
            .iter()
            .map(|r| self.tap.count("list", r) + self.tap.count("watch", r))
            .sum()
    }

    fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The standby lists and watches before it leads (warm), takes over from its caches without
/// listing again, and the old leader, frozen past its lease and thawed, sends nothing: no write,
/// no probe, before it knows it lost.
async fn a_warm_standby_takes_over_and_a_thawed_leader_sends_nothing(mut h: Harness) {
    h.stop_controller();
    for t in ["t1", "t2", "t3", "t4"] {
        h.provider.answer(t, Answer::Ok);
    }
    let one = Frozen::start(&h, "one");
    eventually(15, "one leads", async || is_leader(&one.health)).await;
    for (c, t) in [("c1", "t1"), ("c2", "t2"), ("c3", "t3")] {
        h.source_secret(&format!("{c}-input"), t).await;
        h.create_credential(h.local(c)).await;
    }
    eventually(15, "ready under one", async || h.all_ready(["c1", "c2", "c3"]).await).await;
    let two = Frozen::start(&h, "two");
    eventually(15, "two stands by with its caches listed", async || {
        two.health.ready() == Ok("standby: caches synced; another replica holds the lease")
    })
    .await;
    assert_eq!(
        two.tap.writes(),
        0,
        "a standby writes nothing: {:?}",
        two.tap.requests()
    );
    assert_eq!(two.probes(), 0, "a standby probes nothing");
    let listed = two.lists();
    assert!(
        listed >= 3,
        "the standby listed what the leader lists: {:?}",
        two.tap.requests()
    );

    // Freeze the leader in the middle of a reconcile (its probe of t5 answers in 3 s) for
    // longer than its lease: when it thaws, that reconcile goes on from where it stood.
    h.provider.answer("t5", Answer::Slow(Duration::from_secs(3)));
    h.source_secret("c5-input", "t5").await;
    h.create_credential(h.local("c5")).await;
    eventually(10, "one probes c5", async || h.provider.hits("t5") == 1).await;
    one.freeze.send(Duration::from_secs(8)).expect("freeze");
    let frozen_at = std::time::Instant::now();
    let one_writes = one.tap.writes();
    // When it thaws, its lease manager learns of the loss only after 5 s: until then only the
    // lapse of the lease it last renewed (the fence's clock) can stop it.
    for verb in ["get", "patch", "apply", "update", "create"] {
        one.tap.slow(verb, "leases", Duration::from_secs(5));
    }
    eventually(8, "two takes over while one is frozen", async || is_leader(&two.health)).await;
    h.source_secret("c4-input", "t4").await;
    h.create_credential(h.local("c4")).await;
    h.request_probe("c1", "2026-12-03T00:00:00Z").await;
    eventually(8, "new credentials ready under two", async || {
        h.all_ready(["c4", "c5"]).await
    })
    .await;
    assert_eq!(
        two.lists(),
        listed,
        "taking over lists nothing again: {:?}",
        two.tap.requests()
    );
    // Thaw, and give the thawed leader every chance to act on what it missed.
    while frozen_at.elapsed() < Duration::from_secs(9) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(10, "one knows it stands by", async || {
        one.health.ready().is_ok_and(|m| m.starts_with("standby"))
    })
    .await;
    tenantcred_testkit::settle(2000).await;
    assert_eq!(
        one.tap.writes(),
        one_writes,
        "a thawed leader writes nothing: {:?}",
        one.tap.requests()
    );
    assert_eq!(
        h.provider.hits("t5"),
        2,
        "one's probe before the freeze, two's after: none after the thaw"
    );
    assert_eq!(h.provider.hits("t4"), 1, "c4 was probed by two alone");
    assert!(is_leader(&two.health));
    one.stop();
    two.stop();
}

/// Credentials that exist before the operator starts, still being listed when it takes the lease
/// (as 100,000 are): the ones the watch delivered before it led are reconciled too.
async fn credentials_listed_while_the_lease_is_taken_are_all_reconciled(mut h: Harness) {
    h.stop_controller();
    for i in 0..6 {
        let tok = format!("early-{i}");
        h.provider.answer(&tok, Answer::Ok);
        h.source_secret(&format!("e{i}-input"), &tok).await;
        h.create_credential(h.local(&format!("e{i}"))).await;
    }
    let Some(api) = h.double.clone() else {
        h.skip("a list that lasts longer than taking the lease needs the double's lag");
        return;
    };
    // The first list takes 6 x 500 ms; the lease is taken within about a second of it.
    api.lag_watch("tenantapicredentials", Duration::from_millis(500));
    let tap = tenantcred_testkit::Tap::default();
    for verb in ["get", "create", "patch", "apply"] {
        tap.slow(verb, "leases", Duration::from_millis(150));
    }
    let one = Frozen::start_with(&h, "early", tap);
    eventually(20, "every credential that was there before reconciled", async || {
        h.all_ready((0..6).map(|i| format!("e{i}"))).await
    })
    .await;
    one.stop();
}

scenarios!(
    status_and_probe_now_through_the_api,
    metrics_follow_live_credentials_and_drop_deleted_ones,
    one_leader_at_a_time_and_the_standby_takes_over,
    a_warm_standby_takes_over_and_a_thawed_leader_sends_nothing,
    credentials_listed_while_the_lease_is_taken_are_all_reconciled,
);
