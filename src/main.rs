use std::net::SocketAddr;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tenantcred::cli::{self, CheckRequest};
use tenantcred::controller::{self, Config, LeaseConfig, Shared};
use tenantcred::decide::egress::{Egress, HostPattern};
use tenantcred::metrics::Metrics;
use tenantcred::server::{self, Readiness};
use tenantcred::telemetry::{self, LogFormat};

/// tenantcred: per-customer API tokens as Kubernetes resources, kept valid, probed and mounted.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the current kubeconfig context (or in-cluster config).
    Run(RunArgs),
    /// Probe one token once, with the controller's own code; no cluster needed. The token is read
    /// from TENANTCRED_TOKEN or stdin, never from an argument (shell history); with --oauth-login
    /// it is got by signing in as the operator would.
    Check(CheckArgs),
    /// List credentials, worst first.
    Status {
        #[command(flatten)]
        kube: cli::KubeArgs,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only this tenant's credentials (filtered by the API server: spec.tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Only credentials of this provider (filtered by the API server: spec.provider).
        #[arg(long)]
        provider: Option<String>,
        /// Output format: a table, or json / yaml for scripts (raw timestamps, full messages).
        #[arg(short = 'o', long, value_enum, default_value_t = cli::Output::Table)]
        output: cli::Output,
    },
    /// Ask the controller to probe a credential now (within its key's budget).
    ProbeNow {
        /// Name of the TenantApiCredential.
        name: String,
        #[command(flatten)]
        kube: cli::KubeArgs,
    },
    /// Print the CRDs (TenantApiCredential, ApiProvider) as YAML, or write one file each.
    Crd {
        /// Write each CRD to DIR/<name>.yaml (what crds/ holds) instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) to stdout.
    Completions { shell: clap_complete::Shell },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespace to watch (repeat for several); all namespaces when omitted.
    #[arg(
        long = "namespace",
        short = 'n',
        env = "TENANTCRED_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Allow plain http:// base URLs (local development and tests only).
    #[arg(long, env = "TENANTCRED_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// A host tokens may be sent to besides each provider's documented one (repeatable):
    /// `api.example.com`, `*.example.com`, an address or network (`10.0.0.0/8`), each with an
    /// optional `:port` (`10.0.0.0/8:8443`, `[::1]:8443`); without one, port 443 only; `:*` for
    /// every port. Addresses that are not public are reachable only when named as addresses, and
    /// only on the pattern's port.
    #[arg(long = "allowed-host", env = "TENANTCRED_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<HostPattern>,
    /// Probes and token-endpoint calls in flight at once, across all providers, shared fairly
    /// between namespaces: a quarter is kept for namespaces holding fewer than another.
    #[arg(long, env = "TENANTCRED_MAX_CONCURRENT_PROBES", default_value_t = tenantcred::decide::fair_share::DEFAULT_TOTAL)]
    max_concurrent_probes: usize,
    /// Probes and token-endpoint calls in flight at once against one provider host; also the
    /// most requests one namespace may have waiting for a slot.
    #[arg(long, env = "TENANTCRED_MAX_PROBES_PER_HOST", default_value_t = tenantcred::decide::fair_share::DEFAULT_PER_HOST)]
    max_probes_per_host: usize,
    /// Reconciles in flight at once.
    #[arg(long, env = "TENANTCRED_CONCURRENCY", default_value_t = controller::DEFAULT_CONCURRENCY)]
    concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TENANTCRED_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Run only while holding a coordination.k8s.io Lease (for several replicas).
    #[arg(long, env = "TENANTCRED_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "TENANTCRED_LEASE_NAME", default_value = "tenantcred-leader")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else the kubeconfig context's).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Requests per second to the Kubernetes API server (client-side token bucket; 0 = no limit).
    #[arg(long, env = "TENANTCRED_KUBE_QPS", default_value_t = tenantcred::client::DEFAULT_QPS)]
    kube_qps: f64,
    /// Requests the client may send at once above the rate.
    #[arg(long, env = "TENANTCRED_KUBE_BURST", default_value_t = tenantcred::client::DEFAULT_BURST)]
    kube_burst: u32,
    /// A workload is restarted at most once per this window; token changes within it are gathered
    /// into one restart at its end (e.g. 30s, 2m).
    #[arg(long, env = "TENANTCRED_RESTART_DEBOUNCE", default_value_t = FlagDuration(tenantcred::decide::rollouts::DEFAULT_DEBOUNCE))]
    restart_debounce: FlagDuration,
    /// Rollouts started per minute, across all workloads; a namespace starts at most a quarter.
    #[arg(long, env = "TENANTCRED_MAX_ROLLOUTS_PER_MINUTE", default_value_t = tenantcred::decide::rollouts::DEFAULT_PER_MINUTE)]
    max_rollouts_per_minute: u32,
    /// Overdue probes sent per second to one provider host after a gap (a restart, a failover):
    /// they queue at this rate, so the window grows with their number instead of the burst.
    #[arg(long, env = "TENANTCRED_CATCH_UP_RATE", value_parser = positive_rate, default_value_t = tenantcred::decide::schedule::DEFAULT_CATCH_UP_PER_SECOND)]
    catch_up_rate: f64,
    /// How the watches take their first list: auto (streamed where the API server offers it,
    /// paged otherwise; asked once at start-up), stream or page.
    #[arg(long, env = "TENANTCRED_LISTS", value_enum, default_value_t = controller::ListMode::Auto)]
    lists: controller::ListMode,
    #[arg(long, env = "TENANTCRED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (RUST_LOG overrides).
    #[arg(long, env = "TENANTCRED_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// raise, charitystack, virtuous, generic, or the name of the definition in --provider-file.
    #[arg(long, required_unless_present = "provider_file")]
    provider: Option<String>,
    /// An ApiProvider definition (YAML, as you would apply it) to check the token against; the
    /// provider is then the one it defines. No cluster is needed.
    #[arg(long, value_name = "FILE")]
    provider_file: Option<std::path::PathBuf>,
    /// The provider's base URL (default: the provider's; required for generic).
    #[arg(long)]
    base_url: Option<String>,
    /// Path of the probe request (default: the provider's; required for generic).
    #[arg(long)]
    probe_path: Option<String>,
    /// Timeout of the probe request (Go duration). Default: the provider's, else 10s.
    #[arg(long)]
    timeout: Option<String>,
    /// Allow plain http:// base URLs.
    #[arg(long, env = "TENANTCRED_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Further hosts (as for `run`; without a port, 443 only); the host of --base-url is allowed
    /// already, on its port.
    #[arg(long = "allowed-host", value_delimiter = ',')]
    allowed_hosts: Vec<HostPattern>,
    /// Also print the provider's error answer as read (bounded, control characters escaped),
    /// after a warning: it may repeat the token. By default only its status, error code, media
    /// type, length and fingerprint are shown.
    #[arg(long)]
    show_body: bool,
    /// Sign in with this login instead of reading a token: a Secret manifest (YAML or JSON) or
    /// key=value lines, holding the keys the provider's grants need (at most 64 KiB). The
    /// access token got is then probed; no token, login value or assertion is printed.
    #[arg(long, value_name = "FILE")]
    oauth_login: Option<std::path::PathBuf>,
    /// With --oauth-login: send the login's refresh token when that is the grant to make. A
    /// provider that rotates refresh tokens replaces it, and the new one is not shown.
    #[arg(long, requires = "oauth_login")]
    send_refresh_token: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tenantcred::outbound::install_crypto_provider();
    // Installed as `kubectl-tenantcred`, kubectl runs it as `kubectl tenantcred ...`: say so in
    // help and completions.
    let bin_name = cli::invoked_name(std::env::args_os().next());
    let command = Cli::command().bin_name(bin_name.clone());
    let parsed = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    match parsed.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, bin_name.replace(' ', "-"), &mut std::io::stdout());
            Ok(())
        }
        Command::Crd { out: None } => {
            print!("{}", tenantcred::crd::crd_yaml()?);
            Ok(())
        }
        Command::Crd { out: Some(dir) } => {
            for (file, crd) in tenantcred::crd::definitions() {
                std::fs::write(dir.join(file), tenantcred::crd::definition_yaml(&crd)?)?;
            }
            Ok(())
        }
        Command::Check(args) => {
            let oauth = match &args.oauth_login {
                Some(file) => match cli::read_login(file) {
                    Ok(login) => Some(cli::OAuthCheck {
                        login,
                        send_refresh_token: args.send_refresh_token,
                    }),
                    Err(why) => {
                        eprintln!("tenantcred check: {why}");
                        std::process::exit(64);
                    }
                },
                None => None,
            };
            // A sign-in gets its own token: none is read.
            let raw = match (&oauth, std::env::var("TENANTCRED_TOKEN")) {
                (Some(_), _) => String::new(),
                (None, Ok(t)) => t,
                (None, Err(_)) => match cli::read_token(std::io::stdin().lock()) {
                    Ok(input) => cli::token_from_stdin(&input).to_owned(),
                    Err(why) => {
                        eprintln!("tenantcred check: {why}");
                        std::process::exit(64);
                    }
                },
            };
            let egress = Egress::new(args.allowed_hosts, args.allow_insecure_http);
            let egress = match &args.base_url {
                Some(url) => egress.trusting(url),
                None => egress,
            };
            let (provider, defined) = match &args.provider_file {
                Some(file) => {
                    let (name, profile) = cli::read_definition(file)?;
                    (args.provider.unwrap_or(name), Some(profile))
                }
                None => (args.provider.unwrap_or_default(), None),
            };
            let req = CheckRequest {
                provider,
                defined,
                base_url: args.base_url,
                probe_path: args.probe_path,
                timeout: args.timeout,
                egress,
                show_body: args.show_body,
            };
            let report = match &oauth {
                Some(o) => cli::check_oauth(&req, o).await,
                None => cli::check(&req, &raw).await,
            };
            print!("{}", report.text);
            if args.show_body {
                use std::io::Write as _;
                // The report first, then the warning, then the body, in that order on a terminal.
                let _ = std::io::stdout().flush();
                match &report.body {
                    Some(body) => {
                        eprintln!("{}", cli::BODY_WARNING);
                        println!("body:\n{}", body.as_str());
                    }
                    None => eprintln!("tenantcred check: no error answer to show"),
                }
            }
            std::process::exit(report.code);
        }
        Command::Status {
            kube,
            all_namespaces,
            tenant,
            provider,
            output,
        } => {
            let (client, ns) = kube.connect().await?;
            let filter = cli::StatusFilter { tenant, provider };
            print!(
                "{}",
                cli::status(client, (!all_namespaces).then_some(ns.as_str()), &filter, output).await?
            );
            Ok(())
        }
        Command::ProbeNow { name, kube } => {
            let (client, ns) = kube.connect().await?;
            print!("{}", cli::probe_now(client, &ns, &name).await?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

/// A rate of at least one probe an hour (and a finite one).
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 / 3600.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: a number of probes per second, at least 1/3600"
        )),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level);
    let metrics = Arc::new(Metrics::new());
    let client = tenantcred::client::build(args.kube_qps, args.kube_burst, metrics.clone()).await?;
    let identity = args.identity.unwrap_or_else(default_identity);
    let config = Config {
        instance: identity.clone(),
        namespaces: args.namespaces,
        egress: Egress::new(args.allowed_hosts, args.allow_insecure_http),
        max_concurrent_probes: args.max_concurrent_probes,
        max_probes_per_host: args.max_probes_per_host,
        concurrency: args.concurrency,
        restart_debounce: args.restart_debounce.0,
        max_rollouts_per_minute: args.max_rollouts_per_minute,
        lists: args.lists,
        catch_up_per_second: args.catch_up_rate,
        ..Config::default()
    };
    let lease = args.leader_elect.then(|| LeaseConfig {
        name: args.lease_name,
        namespace: args
            .lease_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity,
        duration_seconds: tenantcred::decide::leadership::LEASE_SECONDS,
        grace_seconds: tenantcred::decide::leadership::LEASE_GRACE_SECONDS,
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight work and releasing the lease");
        let _ = stop_tx.send(true);
    });
    let health = Arc::new(Readiness::default());
    let mut http_stop = stop.clone();
    let http = tokio::spawn(server::serve(
        args.metrics_addr,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    ));
    let shared = Shared::new(&config, metrics, health)?;
    let result = controller::run(client, config, shared, lease, stop).await;
    http.abort();
    result
}

/// A duration flag, read and shown the way the CRD's durations are (`30s`, `2m`).
#[derive(Clone, Copy, Debug)]
struct FlagDuration(std::time::Duration);

impl std::str::FromStr for FlagDuration {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        tenantcred::decide::duration::parse(v).map(Self)
    }
}

impl std::fmt::Display for FlagDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&tenantcred::decide::duration::format(self.0))
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{}-{}",
        if host.is_empty() { "tenantcred" } else { &host },
        std::process::id()
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
