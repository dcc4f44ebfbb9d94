use clap::{Parser, Subcommand};
use tenantcred::controller::{self, Config};
use tenantcred::telemetry::{self, LogFormat};

/// tenantcred: per-customer API tokens as Kubernetes resources.
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
    /// Print the TenantApiCredential CRD as YAML.
    Crd,
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
    /// Probes in flight at once, across all providers.
    #[arg(long, env = "TENANTCRED_MAX_CONCURRENT_PROBES", default_value_t = 16)]
    max_concurrent_probes: usize,
    /// Probes in flight at once against one provider host.
    #[arg(long, env = "TENANTCRED_MAX_PROBES_PER_HOST", default_value_t = 8)]
    max_probes_per_host: usize,
    /// Reconciles in flight at once.
    #[arg(long, env = "TENANTCRED_CONCURRENCY", default_value_t = 64)]
    concurrency: u16,
    #[arg(long, env = "TENANTCRED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (RUST_LOG overrides).
    #[arg(long, env = "TENANTCRED_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", tenantcred::crd::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init(args.log_format, &args.log_level);
            tenantcred::probe::install_crypto_provider();
            let client = kube::Client::try_default().await?;
            let config = Config {
                namespaces: args.namespaces,
                allow_insecure_http: args.allow_insecure_http,
                max_concurrent_probes: args.max_concurrent_probes,
                max_probes_per_host: args.max_probes_per_host,
                concurrency: args.concurrency,
                ..Config::default()
            };
            controller::run(client, config).await
        }
    }
}
