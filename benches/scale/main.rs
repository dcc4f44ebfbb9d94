//! Scale benchmark: the real `tenantcred run` binary, in its own process, against the in-memory
//! API server double (served over HTTP on 127.0.0.1) or a real kube-apiserver + etcd (`--real`),
//! and a provider server on 127.0.0.1.
//!
//!   cargo bench --bench scale                      # double: N = 1,000 and 10,000 (see BENCHMARKS.md)
//!   cargo bench --bench scale -- --n 2000 --steady 300
//!   cargo bench --bench scale -- --smoke           # N = 200, no steady phase: checks it works
//!   cargo bench --bench scale -- --real            # real API server: N = 1,000 and 10,000
//!   cargo bench --bench scale -- --real --n 500 --steady 60
//!
//! It prints figures; it asserts nothing about them (CI machines are noisy).
mod costs;
mod operator;
mod real;

use tenantcred_testkit as support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Answer, ApiServer, Provider};

/// `tenantcred run` as both modes start it: the test providers are plain http on 127.0.0.1.
const OPERATOR_ARGS: [&str; 6] = [
    "run",
    "--allow-insecure-http",
    "--allowed-host",
    "127.0.0.1:*",
    "--log-level",
    "warn",
];

pub(crate) const PROVIDERS: [&str; 3] = ["raise", "charitystack", "virtuous"];
pub(crate) const NAMESPACES: usize = 100;

struct Run {
    n: usize,
    /// Seconds of steady state to observe after every credential is Ready.
    steady: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let real = args.iter().any(|a| a == "--real");
    if real && args.iter().any(|a| a == "--costs") {
        let n = arg("--n").and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let run = async {
            if args.iter().any(|a| a == "--crd-variants") {
                costs::crd_variants(n).await
            } else if args.iter().any(|a| a == "--lists") {
                costs::lists(n).await
            } else {
                costs::run(n).await
            }
        };
        if let Err(e) = rt.block_on(run) {
            eprintln!("request-cost benchmark failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if real {
        let runs = match arg("--n").and_then(|v| v.parse().ok()) {
            Some(n) => vec![(n, arg("--steady").and_then(|v| v.parse().ok()).unwrap_or(60))],
            None if args.iter().any(|a| a == "--smoke") => vec![(200, 10)],
            None => vec![(1_000, 60), (10_000, 60)],
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        if let [(n, steady)] = runs[..] {
            if let Err(e) = rt.block_on(real::run(n, steady)) {
                eprintln!("real-server benchmark failed: {e}");
                std::process::exit(1);
            }
            return;
        }
        // Each N gets a fresh control plane (one per process), so no run sees another's objects.
        for (n, steady) in runs {
            let status = std::process::Command::new(std::env::current_exe().expect("benchmark binary"))
                .args(["--real", "--n", &n.to_string(), "--steady", &steady.to_string()])
                .status()
                .expect("run the benchmark for one N");
            if !status.success() {
                std::process::exit(1);
            }
        }
        return;
    }
    let runs = if args.iter().any(|a| a == "--smoke") {
        vec![Run { n: 200, steady: 0 }]
    } else if let Some(n) = arg("--n").and_then(|v| v.parse().ok()) {
        vec![Run {
            n,
            steady: arg("--steady").and_then(|v| v.parse().ok()).unwrap_or(240),
        }]
    } else {
        vec![Run { n: 1_000, steady: 720 }, Run { n: 10_000, steady: 720 }]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rss = Vec::new();
    for r in &runs {
        let report = rt.block_on(run(r));
        rss.push((r.n, report));
    }
    if rss.len() == 2 {
        let (n1, a) = rss[0];
        let (n2, b) = rss[1];
        let per = (b as f64 - a as f64) * 1024.0 / (n2 - n1) as f64;
        println!("\nper-credential memory (operator RSS after sync, {n2} minus {n1}): {per:.0} bytes");
    }
}

/// `tenantcred run` as both modes start it, against `kubeconfig`, serving /metrics and /readyz on
/// 127.0.0.1:`metrics_port`. BENCH_OPERATOR_PREFIX runs it under a profiler, e.g.
/// "valgrind --tool=massif" or "perf record -g -o FILE".
pub(crate) fn operator_command(kubeconfig: &std::path::Path, metrics_port: u16) -> Command {
    let prefix: Vec<String> = std::env::var("BENCH_OPERATOR_PREFIX")
        .map(|p| p.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(env!("CARGO_BIN_EXE_tenantcred"));
            // Its own process group: `stop` ends the profiler and the operator under it together.
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c
        }
        // Another build of the operator, to compare (e.g. an older commit's).
        None => Command::new(
            std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tenantcred").into()),
        ),
    };
    command
        .args(OPERATOR_ARGS)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

pub(crate) fn token_for(i: usize) -> String {
    match PROVIDERS[i % 3] {
        "raise" => {
            let b64 = |s: &str| {
                support::apiserver::b64(s.as_bytes())
                    .trim_end_matches('=')
                    .replace('+', "-")
                    .replace('/', "_")
            };
            let exp = jiff::Timestamp::now().as_second() + 365 * 86_400;
            format!(
                "{}.{}.c2ln",
                b64(r#"{"alg":"RS256","typ":"JWT"}"#),
                b64(&format!(r#"{{"sub":"org-{i}","exp":{exp}}}"#))
            )
        }
        "charitystack" => format!("cs_live_bench{i:06}"),
        _ => format!("virtuous-key-{i:06}"),
    }
}

pub(crate) fn interval_for(provider: &str) -> &'static str {
    // Short, so a run shows two intervals quickly, yet inside each key's budget with room for
    // the ±10% jitter: CharityStack (10 probes/h) 7m; Raise (undocumented, 20/h) 4m;
    // Virtuous (50/h) 2m.
    match provider {
        "charitystack" => "7m",
        "virtuous" => "2m",
        _ => "4m",
    }
}

fn kubeconfig(addr: std::net::SocketAddr) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tenantcred-bench-{}.kubeconfig", std::process::id()));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: bench, cluster: {{server: \"http://{addr}\"}}}}]\n\
         users: [{{name: bench, user: {{}}}}]\ncontexts: [{{name: bench, context: {{cluster: bench, user: bench, namespace: default}}}}]\n\
         current-context: bench\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// (rss KiB, peak rss KiB, cpu seconds) of a process, from /proc.
pub(crate) fn proc_stats(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the ")" : state is field 0, utime field 11, stime field 12; 100 ticks per second.
    (kib("VmRSS:"), kib("VmHWM:"), (ticks(11) + ticks(12)) / 100.0)
}

/// SIGTERM, as Kubernetes stops a pod: a graceful exit (profilers get to write); killed after
/// `grace`. A child started as a process group leader (under a profiler) is stopped with its
/// group, so the operator under the profiler does not outlive the run.
pub(crate) async fn stop(child: &mut Child, grace: Duration) {
    let pid = child.id().to_string();
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let stopped = Instant::now();
    while stopped.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn per_credential(reqs: &BTreeMap<(String, String), u64>, n: usize) -> String {
    let mut lines = Vec::new();
    for ((verb, resource), count) in reqs {
        if resource == "leases" {
            continue;
        }
        lines.push(format!(
            "    {resource:32} {verb:7} {:>8.3} per credential ({count})",
            *count as f64 / n as f64
        ));
    }
    lines.join("\n")
}

async fn run(r: &Run) -> u64 {
    let n = r.n;
    println!(
        "\n=== N = {n} credentials over {NAMESPACES} namespaces and {} providers ===",
        PROVIDERS.len()
    );
    let api = ApiServer::new();
    let provider = Provider::start().await;
    provider.default_answer(Answer::Ok);
    let addr = api.serve_http().await;
    let kubeconfig = kubeconfig(addr);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080);
    let mut child: Child = operator_command(&kubeconfig, metrics_port)
        .spawn()
        .expect("start tenantcred run");
    let pid = child.id();
    let profiled = std::env::var_os("BENCH_OPERATOR_PREFIX").is_some();
    tokio::time::sleep(Duration::from_millis(if profiled { 5000 } else { 500 })).await;
    let (idle_rss, _, _) = proc_stats(pid);

    // Sync: create everything at once, then wait until every credential is Ready.
    api.reset_counts();
    let created = Instant::now();
    for i in 0..n {
        let ns = format!("tenant-{:02}", i % NAMESPACES);
        let p = PROVIDERS[i % 3];
        api.create(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("c{i}-input"), "namespace": ns},
            "type": "Opaque", "stringData": {"token": token_for(i)}}),
        );
        api.create(json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
            "metadata": {"name": format!("c{i}"), "namespace": ns},
            "spec": {"tenant": format!("org{i}"), "provider": p, "baseUrl": provider.base_url,
                     "probe": {"path": "/probe", "interval": interval_for(p)}, "credentialRef": {"name": format!("c{i}-input")}}}));
    }
    let create_time = created.elapsed();
    let mut ready_at: HashMap<String, f64> = HashMap::with_capacity(n);
    let deadline = created + Duration::from_secs(900);
    while ready_at.len() < n && Instant::now() < deadline {
        let t = created.elapsed().as_secs_f64();
        api.scan("tenantapicredentials", |ns, name, obj| {
            let ready = obj["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            if ready {
                ready_at.entry(format!("{ns}/{name}")).or_insert(t);
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ready = created.elapsed();
    let sync_reqs = api.requests();
    let (rss_synced, hwm_synced, cpu_synced) = proc_stats(pid);
    let mut latencies: Vec<f64> = ready_at.values().copied().collect();
    latencies.sort_by(f64::total_cmp);
    println!("sync:");
    println!(
        "  created {n} source Secrets + {n} credentials in {:.2}s",
        create_time.as_secs_f64()
    );
    println!(
        "  {}/{n} Ready after {:.1}s (per credential from creation: p50 {:.1}s, p99 {:.1}s)",
        ready_at.len(),
        all_ready.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let seen = provider.seen();
    let distinct: std::collections::HashSet<_> = seen.iter().filter_map(|s| s.authorization.as_deref()).collect();
    println!(
        "  provider requests until all Ready: {} for {} distinct keys (any extra are first follow-ups, due from 10% of an interval on)",
        seen.len(),
        distinct.len()
    );
    if std::env::var_os("BENCH_EXPLAIN_EXTRA").is_some() {
        // Which credentials had more than one probe before all were Ready, and what happened.
        let mut hits: HashMap<&str, usize> = HashMap::new();
        for s in &seen {
            *hits.entry(s.authorization.as_deref().unwrap_or("")).or_default() += 1;
        }
        for (auth, count) in hits.iter().filter(|(_, c)| **c > 1).take(3) {
            let tok = auth.trim_start_matches("Bearer ");
            let mut found = None;
            api.scan("secrets", |_, _, s| {
                let data = s["data"]["token"].as_str().map(support::apiserver::unb64);
                if data.as_deref() == Some(tok.as_bytes())
                    && s["metadata"]["labels"]["tenantcred.dev/credential"].is_string()
                {
                    found = s["metadata"]["labels"]["tenantcred.dev/credential"]
                        .as_str()
                        .map(str::to_owned);
                }
            });
            let Some(name) = found else { continue };
            let mut reasons = Vec::new();
            api.scan("events", |_, _, e| {
                if e["regarding"]["name"] == name.as_str() {
                    reasons.push(format!("{}@{}", e["reason"], e["eventTime"]));
                }
            });
            println!("  EXTRA {name}: {count} probes; events {reasons:?}");
        }
    }
    println!("  API-server requests during sync:\n{}", per_credential(&sync_reqs, n));
    println!(
        "  operator RSS: idle {:.1} MiB, after sync {:.1} MiB (peak so far {:.1} MiB); CPU {:.1}s",
        idle_rss as f64 / 1024.0,
        rss_synced as f64 / 1024.0,
        hwm_synced as f64 / 1024.0,
        cpu_synced
    );

    if r.steady > 0 {
        // Steady state: nothing changes; only scheduled probes happen.
        tokio::time::sleep(Duration::from_secs(5)).await;
        api.reset_counts();
        provider.clear_seen();
        provider.record_times(true);
        let (_, _, cpu0) = proc_stats(pid);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(r.steady)).await;
        let window = start.elapsed().as_secs_f64();
        let (_, _, cpu1) = proc_stats(pid);
        let times = provider.take_times();
        provider.record_times(false);
        let steady_reqs = api.requests();
        let probes = times.len();
        let buckets = (window / 10.0).floor().max(1.0) as usize;
        let mut counts = vec![0usize; buckets];
        for (t, _) in &times {
            let b = (t.duration_since(start).as_secs_f64() / 10.0) as usize;
            if b < buckets {
                counts[b] += 1;
            }
        }
        let mean = counts.iter().sum::<usize>() as f64 / buckets as f64;
        let max = counts.iter().copied().max().unwrap_or(0);
        let status_writes: u64 = steady_reqs
            .iter()
            .filter(|((v, res), _)| {
                res == "tenantapicredentials/status" && matches!(v.as_str(), "apply" | "patch" | "update")
            })
            .map(|(_, c)| c)
            .sum();
        let secret_writes: u64 = steady_reqs
            .iter()
            .filter(|((v, res), _)| res == "secrets" && matches!(v.as_str(), "apply" | "patch" | "update" | "create"))
            .map(|(_, c)| c)
            .sum();
        println!("steady state ({window:.0}s):");
        println!(
            "  probes: {probes}; per 10s bucket: mean {mean:.1}, max {max} (max/mean {:.2})",
            max as f64 / mean.max(1e-9)
        );
        // Per key: how many probes, the shortest gap between two of them, and the rate implied
        // by the mean gap (a window shorter than an hour cannot show a rolling-hour count).
        let mut by_key: HashMap<&str, Vec<f64>> = HashMap::new();
        for (t, key) in &times {
            by_key
                .entry(key.as_str())
                .or_default()
                .push(t.duration_since(start).as_secs_f64());
        }
        let mut worst: BTreeMap<&str, (usize, f64, f64, u32)> = BTreeMap::new();
        for (key, ts) in &mut by_key {
            ts.sort_by(f64::total_cmp);
            let p = if key.starts_with("cs_live_") {
                "charitystack"
            } else if key.starts_with("eyJ") {
                "raise"
            } else {
                "virtuous"
            };
            let budget = tenantcred::decide::provider::builtin::get(p)
                .map(|pr| pr.hourly_probe_budget())
                .unwrap_or(0);
            let gaps: Vec<f64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
            let min_gap = gaps.iter().copied().fold(f64::INFINITY, f64::min);
            let rate = if gaps.is_empty() {
                0.0
            } else {
                3600.0 * gaps.len() as f64 / gaps.iter().sum::<f64>()
            };
            let e = worst.entry(p).or_insert((0, f64::INFINITY, 0.0, budget));
            e.0 = e.0.max(ts.len());
            e.1 = e.1.min(min_gap);
            e.2 = e.2.max(rate);
        }
        for (p, (count, min_gap, rate, budget)) in worst {
            println!(
                "  {p:12} busiest key: {count} probes in {window:.0}s; shortest gap {min_gap:.0}s; highest mean-gap rate {rate:.1}/hour (budget {budget}/hour)"
            );
        }
        println!(
            "  Secret writes: {secret_writes}; status writes: {status_writes} ({:.2} per probe)",
            status_writes as f64 / probes.max(1) as f64
        );
        println!(
            "  API-server requests per credential in the window:\n{}",
            per_credential(&steady_reqs, n)
        );
        println!(
            "  CPU: {:.2}s over the window = {:.3}s per 1,000 probes",
            cpu1 - cpu0,
            (cpu1 - cpu0) * 1000.0 / probes.max(1) as f64
        );
    }
    let (rss_end, hwm, cpu_end) = proc_stats(pid);
    println!(
        "operator: peak RSS {:.1} MiB, RSS at end {:.1} MiB, CPU {:.1}s in all",
        hwm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        cpu_end
    );
    stop(&mut child, Duration::from_secs(60)).await;
    let _ = std::fs::remove_file(&kubeconfig);
    if ready_at.len() < n {
        eprintln!("not every credential became Ready: {} of {n}", ready_at.len());
        std::process::exit(1);
    }
    rss_synced
}
