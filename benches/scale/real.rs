//! The benchmark on a real kube-apiserver + etcd (the test kit's control plane): the operator
//! binary runs as the Helm chart's ServiceAccount with leader election, as the chart runs it.
//!
//! In one run it measures the machine's floor first (how fast this server takes plain
//! server-side-apply Secret writes; those N Secrets stay, as unrelated Secrets the operator must
//! not cache), creates N credentials with their source Secrets, starts the operator, and reports
//! the API server's own request counts (`apiserver_request_total`, before/after) per credential.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tenantcred::crd::TenantApiCredential;
use tenantcred_testkit::{Answer, Provider, chart, envtest};

use crate::operator::{ByHand, failover, free_port, operator_writes, readyz_says, signal};
use crate::{NAMESPACES, PROVIDERS, interval_for, percentile, proc_stats, stop, token_for};

/// Requests in flight while the benchmark writes (the operator's default reconcile concurrency).
const WRITERS: usize = 64;

/// Seconds watched after a restarted operator is ready (the probe wave).
const RESTART_WATCH: u64 = 60;

/// Credentials created by hand during the cold start, and again during the probe wave after the
/// restart, each timed from its creation to Ready.
const BY_HAND: usize = 20;

/// Credentials on which the operator's request pattern is timed without the operator.
const PATTERN_SAMPLE: usize = 10_000;

type Counts = BTreeMap<(String, String), f64>;

/// `apiserver_request_total` summed by (verb, resource[/subresource]).
async fn request_counts(client: &kube::Client) -> Result<Counts, String> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(req).await.map_err(|e| format!("/metrics: {e}"))?;
    let mut counts = Counts::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        // The request pattern's stand-in credentials (`costs.rs`) are of another group.
        if label("group").ends_with("costs.tenantcred.dev") {
            continue;
        }
        let (resource, sub) = (label("resource"), label("subresource"));
        let resource = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        *counts.entry((label("verb"), resource)).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn diff(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

const OURS: [&str; 5] = [
    "secrets",
    "tenantapicredentials",
    "events",
    "deployments",
    "statefulsets",
];

const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

fn print_counts(counts: &Counts, per: usize) {
    for ((verb, resource), count) in counts {
        // What the operator touches; the rest is the control plane's own traffic.
        if !OURS.iter().any(|r| resource.split('/').next() == Some(*r)) {
            continue;
        }
        println!(
            "    {resource:32} {verb:7} {:>8.3} per credential ({count:.0})",
            count / per as f64
        );
    }
}

fn writes(counts: &Counts) -> f64 {
    counts
        .iter()
        .filter(|((verb, resource), _)| {
            WRITE_VERBS.contains(&verb.as_str()) && OURS.iter().any(|r| resource.split('/').next() == Some(*r))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A kubeconfig for the operator: the control plane's, with the chart ServiceAccount's token.
fn operator_kubeconfig(plane: &envtest::ControlPlane, token: &str) -> Result<std::path::PathBuf, String> {
    let admin = std::fs::read_to_string(&plane.kubeconfig).map_err(|e| e.to_string())?;
    let start = admin.find("user: {token: \"").ok_or("unexpected kubeconfig")? + "user: {token: \"".len();
    let end = start + admin[start..].find('"').ok_or("unexpected kubeconfig")?;
    let text = format!("{}{token}{}", &admin[..start], &admin[end..]);
    let path = plane.dir.join("operator.kubeconfig");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

pub async fn run(n: usize, steady: u64) -> Result<(), String> {
    println!("\n=== real API server: N = {n} credentials over {NAMESPACES} namespaces and 3 providers ===");
    let plane = envtest::control_plane()?;
    let installed = chart::installed(plane)?;
    let client = chart::admin(plane).await?;
    let run_id = format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id())
    );
    let ns_of = |i: usize| format!("bench-{n}-{}", i % NAMESPACES);
    crate::costs::namespaces(&client, &format!("bench-{n}"), n).await?;
    chart::ensure_namespace(&client, &format!("floor-{n}")).await?;

    // The floor: plain server-side-apply Secret writes, as fast as this server takes them.
    let floor_ns = format!("floor-{n}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &floor_ns);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| crate::costs::floor_write(secrets.clone(), i))
        .buffer_unordered(WRITERS)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| format!("floor writes: {e}"))?;
    let floor_rate = n as f64 / started.elapsed().as_secs_f64();
    let floor_sync = 2.0 * n as f64 / floor_rate;
    println!(
        "floor: {n} server-side-apply Secret writes at {floor_rate:.0}/s ({WRITERS} in flight); \
         2 writes per credential would take {floor_sync:.1}s (these {n} Secrets stay, unrelated to tenantcred)"
    );

    // The operator's own request pattern, without the operator, on a sample: what the cold start
    // would take if the operator added nothing to the requests it must send (BENCHMARKS.md).
    let sample = n.min(PATTERN_SAMPLE);
    println!("the operator's requests for {sample} new credentials, without the operator:");
    let pattern_rate = crate::costs::pattern(&client, sample).await?;
    let pattern_sync = n as f64 / pattern_rate;
    println!(
        "  so {n} would take {pattern_sync:.1}s = {:.2}x the 2-write floor (these objects stay, unrelated to tenantcred)",
        pattern_sync / floor_sync
    );

    // The credentials, created before the operator starts.
    let provider = Provider::start().await;
    provider.default_answer(Answer::Ok);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let ns = ns_of(i);
            let base_url = provider.base_url.clone();
            async move {
                let p = PROVIDERS[i % 3];
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
                let secret: Secret = serde_json::from_value(json!({"metadata": {"name": format!("c{i}-input")},
                    "type": "Opaque", "stringData": {"token": token_for(i)}}))
                .map_err(kube::Error::SerdeError)?;
                secrets.create(&PostParams::default(), &secret).await?;
                let tacs: Api<TenantApiCredential> = Api::namespaced(client, &ns);
                let tac: TenantApiCredential = serde_json::from_value(json!({"apiVersion": "tenantcred.dev/v1alpha1",
                    "kind": "TenantApiCredential", "metadata": {"name": format!("c{i}")},
                    "spec": {"tenant": format!("org{i}"), "provider": p, "baseUrl": base_url,
                             "probe": {"path": "/probe", "interval": interval_for(p)},
                             "credentialRef": {"name": format!("c{i}-input")}}}))
                .map_err(kube::Error::SerdeError)?;
                tacs.create(&PostParams::default(), &tac).await.map(|_| ())
            }
        })
        .buffer_unordered(WRITERS)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| format!("creating credentials: {e}"))?;
    println!(
        "created {n} source Secrets + {n} credentials in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Readiness is followed with one watch of our own (one request, not a poll of N objects).
    let tacs: Api<TenantApiCredential> = Api::all(client.clone());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let prefix = format!("bench-{n}-");
    // The follower's own first list (N credentials) must be over before the request counts are
    // taken: at 100,000 it takes longer than a fixed pause, and its pages were counted as the
    // operator's.
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn(async move {
        let mut listed_tx = Some(listed_tx);
        let mut stream = watcher(tacs, watcher::Config::default())
            .inspect_ok(move |event| {
                if matches!(event, watcher::Event::InitDone)
                    && let Some(tx) = listed_tx.take()
                {
                    let _ = tx.send(());
                }
            })
            .applied_objects()
            .boxed();
        while let Some(Ok(tac)) = stream.next().await {
            let ready = tac
                .status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let ours = tac
                .metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with(&prefix));
            if ready && ours {
                let key = format!(
                    "{}/{}",
                    tac.metadata.namespace.unwrap_or_default(),
                    tac.metadata.name.unwrap_or_default()
                );
                let _ = ready_tx.send((key, Instant::now()));
            }
        }
    });
    listed_rx
        .await
        .map_err(|_| "the benchmark's credential watch ended before its first list".to_string())?;

    let before = request_counts(&client).await?;
    let kubeconfig = operator_kubeconfig(plane, &installed.token)?;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let start_operator = || {
        crate::operator_command(&kubeconfig, metrics_port)
            .arg("--leader-elect")
            .args(["--lease-namespace", chart::RELEASE_NAMESPACE, "--lease-name"])
            .arg(format!("bench-{run_id}"))
            .spawn()
            .map_err(|e| format!("start tenantcred run: {e}"))
    };
    let server_cpu_before = crate::costs::server_cpu();
    let mut child = start_operator()?;
    let pid = child.id();
    let operator_started = Instant::now();
    // A person at work during the cold start: a credential by hand every 1/20 of the time the
    // requests alone would take (x 1.2), from 2 s after the start.
    let spacing = Duration::from_secs_f64((pattern_sync * 1.2 / BY_HAND as f64).max(0.5));
    let cold_hands = ByHand::start(
        client.clone(),
        (0..BY_HAND).map(ns_of).collect(),
        "hand-cold",
        provider.base_url.clone(),
        Duration::from_secs(2),
        spacing,
    );
    let mut ready: HashSet<String> = HashSet::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let deadline = operator_started + Duration::from_secs(1800);
    while (ready.len() < n || !cold_hands.all_ready()) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), ready_rx.recv()).await {
            Ok(Some((key, at))) => {
                if cold_hands.saw_ready(&key, at) {
                    continue;
                }
                if ready.insert(key) {
                    latencies.push(at.duration_since(operator_started).as_secs_f64());
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let sync = operator_started.elapsed().as_secs_f64();
    let (apiserver_cpu, etcd_cpu) = crate::costs::server_cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_sync = request_counts(&client).await?;
    let (rss_synced, _, cpu_synced) = proc_stats(pid);
    latencies.sort_by(f64::total_cmp);
    let sync_counts = diff(&after_sync, &before);
    println!("sync (operator started after the credentials existed):");
    println!(
        "  {}/{n} Ready after {sync:.1}s = {:.2}x the 2-write floor of {floor_sync:.1}s, {:.2}x the requests' own {pattern_sync:.1}s (p50 {:.1}s, p99 {:.1}s)",
        ready.len(),
        sync / floor_sync,
        sync / pattern_sync,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "  first Ready after {:.1}s; CPU during sync: kube-apiserver {:.1}s, etcd {:.1}s, operator {cpu_synced:.1}s, of {:.1}s on {} cores",
        latencies.first().copied().unwrap_or(f64::NAN),
        apiserver_cpu - server_cpu_before.0,
        etcd_cpu - server_cpu_before.1,
        sync * cores(),
        cores()
    );
    println!(
        "  writes per credential: {:.2} (the benchmark's own watch is one request; {BY_HAND} credentials by hand are among them)",
        writes(&sync_counts) / n as f64
    );
    println!(
        "  {BY_HAND} credentials made by hand during the cold start, one every {:.1}s from 2s: {}",
        spacing.as_secs_f64(),
        cold_hands.summary()
    );
    println!("  apiserver_request_total during sync, per credential:");
    print_counts(&sync_counts, n);
    println!(
        "  operator RSS after sync {:.1} MiB; CPU {cpu_synced:.1}s",
        rss_synced as f64 / 1024.0
    );

    if steady > 0 {
        let start = request_counts(&client).await?;
        let probes_before = provider.seen().len();
        tokio::time::sleep(Duration::from_secs(steady)).await;
        let end = request_counts(&client).await?;
        let window = diff(&end, &start);
        println!(
            "steady state ({steady}s, nothing changing): {:.0} writes, {} probes",
            writes(&window) + 0.0,
            provider.seen().len() - probes_before
        );
        print_counts(&window, n);
    }
    let (_, hwm, cpu_end) = proc_stats(pid);
    println!(
        "operator: peak RSS {:.1} MiB ({:.1} KB per credential), CPU {cpu_end:.1}s in all",
        hwm as f64 / 1024.0,
        hwm as f64 * 1024.0 / n as f64 / 1000.0
    );
    stop(&mut child, Duration::from_secs(30)).await;
    if ready.len() < n {
        follower.abort();
        return Err(format!("not every credential became Ready: {} of {n}", ready.len()));
    }

    // A restart: every credential is Ready and its Secret current, so it should cost the lists
    // and nothing per credential.
    let start = request_counts(&client).await?;
    let probes_before = provider.seen().len();
    let restarted = Instant::now();
    let mut child = start_operator()?;
    let http = reqwest::Client::new();
    // Leading with every cache listed: a standby also answers 200.
    while !readyz_says(&http, metrics_port, "leader: caches synced").await {
        if restarted.elapsed() > Duration::from_secs(600) {
            follower.abort();
            stop(&mut child, Duration::from_secs(30)).await;
            return Err("the restarted operator was not ready within 600 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = restarted.elapsed().as_secs_f64();
    let ready_at = Instant::now();
    let leading_writes = writes(&diff(&request_counts(&client).await?, &start)) + 0.0;
    // The probe wave: what the provider receives each second in the minute after, while a
    // person makes credentials by hand (one every 3 s).
    provider.record_times(true);
    let _ = provider.take_times();
    let wave_hands = ByHand::start(
        client.clone(),
        (0..BY_HAND).map(|i| ns_of(i + BY_HAND)).collect(),
        "hand-wave",
        provider.base_url.clone(),
        Duration::ZERO,
        Duration::from_secs(RESTART_WATCH / BY_HAND as u64),
    );
    let watch_end = ready_at + Duration::from_secs(RESTART_WATCH);
    while Instant::now() < watch_end || (!wave_hands.all_ready() && ready_at.elapsed() < Duration::from_secs(180)) {
        if let Ok(Some((key, at))) = tokio::time::timeout(Duration::from_millis(500), ready_rx.recv()).await {
            wave_hands.saw_ready(&key, at);
        }
    }
    let window = diff(&request_counts(&client).await?, &start);
    let times = provider.take_times();
    provider.record_times(false);
    let mut per_second = vec![0u32; RESTART_WATCH as usize];
    for (at, _) in &times {
        if let Some(slot) = at.checked_duration_since(ready_at).map(|d| d.as_secs() as usize)
            && let Some(count) = per_second.get_mut(slot)
        {
            *count += 1;
        }
    }
    let in_minute: u32 = per_second.iter().sum();
    println!(
        "restart: ready (leader, every cache listed) after {listed:.1}s, with {leading_writes:.0} writes until then; {:.0} writes in all until {:.0}s after the start (the {BY_HAND} credentials by hand among them: the benchmark's 2 creates and the operator's 2 writes each)",
        writes(&window) + 0.0,
        restarted.elapsed().as_secs_f64(),
    );
    println!(
        "  the probe wave: {in_minute} probes in the {RESTART_WATCH}s after ready (the provider simulator is one host for all three providers); per second: highest {}, mean {:.1}; first 10 s: {:?}",
        per_second.iter().max().copied().unwrap_or(0),
        f64::from(in_minute) / RESTART_WATCH as f64,
        &per_second[..10.min(per_second.len())],
    );
    println!(
        "  {BY_HAND} credentials made by hand during it, one every {}s: {}",
        RESTART_WATCH / BY_HAND as u64,
        wave_hands.summary()
    );
    let _ = probes_before;
    print_counts(&window, n);

    // Failover: a warm standby beside the leader; the leader paused (SIGSTOP) past its lease,
    // then thawed; then the new leader killed (SIGKILL). Each time a credential is created by
    // hand at the moment of the failure, and timed to Ready.
    let standby_port = free_port()?;
    let mut standby = crate::operator_command(&kubeconfig, standby_port)
        .arg("--leader-elect")
        .args(["--lease-namespace", chart::RELEASE_NAMESPACE, "--lease-name"])
        .arg(format!("bench-{run_id}"))
        .spawn()
        .map_err(|e| format!("start the standby: {e}"))?;
    let standby_listed = Instant::now();
    let synced = "standby: caches synced";
    while !readyz_says(&http, standby_port, synced).await {
        if standby_listed.elapsed() > Duration::from_secs(600) {
            follower.abort();
            stop(&mut child, Duration::from_secs(30)).await;
            stop(&mut standby, Duration::from_secs(30)).await;
            return Err("the standby did not list within 600 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (standby_rss, _, _) = proc_stats(standby.id());
    println!(
        "standby: caches listed after {:.1}s; RSS {:.1} MiB (leader: {:.1} MiB)",
        standby_listed.elapsed().as_secs_f64(),
        standby_rss as f64 / 1024.0,
        proc_stats(child.id()).0 as f64 / 1024.0
    );
    let old = (child.id(), metrics_port);
    let writes_before = operator_writes(&http, old.1).await;
    signal(old.0, "STOP");
    let outcome = failover(
        &client,
        &http,
        standby_port,
        (&ns_of(0), "failover-stop"),
        &provider,
        &mut ready_rx,
        n + 2 * BY_HAND + 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(old.0, "CONT");
    let thawed = Instant::now();
    while !readyz_says(&http, old.1, "standby").await && thawed.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stood_by = thawed.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes_after = operator_writes(&http, old.1).await;
    println!(
        "failover after SIGSTOP of the leader: {outcome}; thawed, the old leader stood by after {stood_by:.1}s and wrote {} times (0 expected)",
        writes_after - writes_before
    );
    // The new leader killed: the thawed one, warm again, takes over.
    standby.kill().map_err(|e| format!("SIGKILL: {e}"))?;
    let _ = standby.wait();
    let outcome = failover(
        &client,
        &http,
        old.1,
        (&ns_of(1), "failover-kill"),
        &provider,
        &mut ready_rx,
        n + 2 * BY_HAND + 2,
    )
    .await;
    println!("failover after SIGKILL of the leader: {outcome}");
    stop(&mut child, Duration::from_secs(30)).await;
    follower.abort();
    Ok(())
}
