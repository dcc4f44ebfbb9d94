//! The `tenantcred` commands besides `run`: `check` (probe one token with the controller's own
//! code, no cluster needed), `status` (worst first) and `probe-now`. Installed as
//! `kubectl-tenantcred`, the same binary is a kubectl plugin (`kubectl tenantcred status -A`).

use std::fmt::Write as _;
use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::crd::{PROBE_REQUESTED_ANNOTATION, ProbeResult, TenantApiCredential, TenantApiCredentialSpec};
use crate::decide::conditions::{self, Standing, Type};
use crate::decide::egress::Egress;
use crate::decide::plan;
use crate::decide::provider::{self, Profile};
use crate::decide::secret::FIELD_MANAGER;
use crate::decide::text::escaped;
use crate::decide::token;
use crate::decide::verdict;
use crate::outbound::ProviderClient;

mod oauth;
mod render;
pub use oauth::{
    LOGIN_FILE_LIMIT, LoginFile, OAuthCheck, SIGN_IN_REASONS, check_oauth, parse_login, read_login, reason_exit_code,
};
pub use render::{BODY_WARNING, ShownBody};

/// Exit codes of `tenantcred check`, one per verdict, so scripts can branch on them.
pub fn exit_code(result: ProbeResult) -> i32 {
    match result {
        ProbeResult::Valid => 0,
        ProbeResult::Unauthorized => 2,
        ProbeResult::Forbidden => 3,
        ProbeResult::RateLimited => 4,
        ProbeResult::Unavailable => 5,
        ProbeResult::Expired => 6,
        ProbeResult::Invalid => 7,
    }
}

/// A usage or spec error (unknown provider, plain http without the flag...).
pub const EXIT_USAGE: i32 = 64;

pub struct CheckRequest {
    pub provider: String,
    /// A definition read from `--provider-file`: the profile, or why it is refused.
    pub defined: Option<Result<Arc<Profile>, String>>,
    pub base_url: Option<String>,
    pub probe_path: Option<String>,
    pub timeout: Option<String>,
    /// The rules the operator would apply; `--base-url` given on the command line is allowed by
    /// whoever typed it (see `Egress::trusting`).
    pub egress: Egress,
    /// `--show-body`: hand back the error body as read, for the person's own terminal.
    pub show_body: bool,
}

/// What `check` found, ready to print. `text` holds no provider text; `body` (only with
/// `show_body`, and only for an error answer) is the provider's own.
#[derive(Debug)]
pub struct CheckReport {
    pub text: String,
    pub code: i32,
    pub body: Option<ShownBody>,
    /// The reason the credential's Ready condition would show, where `check --oauth-login`
    /// decided one.
    pub reason: Option<crate::decide::conditions::Reason>,
}

/// Reads the token `tenantcred check` was given on stdin, within the operator's bound: at most
/// [`MAX_TOKEN_BYTES`](crate::decide::token::MAX_TOKEN_BYTES) plus a line ending is read, never more.
pub fn read_token(mut input: impl std::io::Read) -> Result<String, String> {
    use std::io::Read;
    let limit = crate::decide::token::MAX_TOKEN_BYTES + 2;
    let mut bytes = Vec::with_capacity(1024);
    (&mut input)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("could not read the token from stdin: {e}"))?;
    if bytes.len() > limit {
        return Err(format!(
            "the token on stdin is longer than {} bytes, the most tenantcred accepts (provider tokens are far smaller)",
            crate::decide::token::MAX_TOKEN_BYTES
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the token on stdin is not UTF-8 text (invalid byte at offset {}): pipe the token itself, not a binary file",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Strips the line ending a shell adds (`echo "$TOKEN" | tenantcred check`); any other
/// surrounding whitespace stays and is reported, as the controller would.
pub fn token_from_stdin(input: &str) -> &str {
    input
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(input)
}

/// The largest definition file `check --provider-file` reads.
const DEFINITION_FILE_LIMIT: u64 = 256 * 1024;

/// Reads an `ApiProvider` definition from a YAML file: its name, and its profile or why it would
/// not be accepted.
pub fn read_definition(path: &std::path::Path) -> anyhow::Result<(String, Result<Arc<Profile>, String>)> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(DEFINITION_FILE_LIMIT + 1).read_to_string(&mut text))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if text.len() as u64 > DEFINITION_FILE_LIMIT {
        anyhow::bail!("{}: larger than {DEFINITION_FILE_LIMIT} bytes", path.display());
    }
    let object: crate::crd::provider::ApiProvider = serde_yaml::from_str(&text).map_err(|e| {
        let e = e.to_string();
        anyhow::anyhow!("{}: not an ApiProvider: {}", path.display(), escaped(&e))
    })?;
    let name = object.name_any();
    let profile = provider::definition::read(&name, &object.spec)
        .map(Arc::new)
        .map_err(|r| r.message(&name));
    Ok((name, profile))
}

/// Probes one token as the controller would. Whatever the command line, the definition file or
/// the provider supplied is printed escaped (`decide::text`): never a raw control character.
pub async fn check(req: &CheckRequest, raw_token: &str) -> CheckReport {
    let spec = serde_json::json!({
        "tenant": "check", "provider": req.provider, "baseUrl": req.base_url,
        "probe": {"path": req.probe_path, "timeout": req.timeout}, "credentialRef": {"name": "stdin"}
    });
    let spec: TenantApiCredentialSpec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => {
            return CheckReport {
                text: format!("error: {}\n", escaped(&e.to_string())),
                code: EXIT_USAGE,
                body: None,
                reason: None,
            };
        }
    };
    let tac = TenantApiCredential::new("check", spec);
    let found = provider::find(&req.provider, |_| req.defined.clone());
    let settings = match plan::resolve(&tac, &req.egress, &found) {
        Ok(s) => s,
        Err(p) => {
            return CheckReport {
                text: format!("error: {}\n", escaped(p.message())),
                code: EXIT_USAGE,
                body: None,
                reason: None,
            };
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "provider:     {} ({})",
        escaped(&settings.profile.name),
        escaped(&settings.probe_url())
    );
    let (token, lifetime) = match token::check(raw_token, &settings.profile.token_format) {
        Ok(t) => t,
        Err(e) => {
            let e = e.to_string();
            let _ = writeln!(
                out,
                "verdict:      Invalid (no request sent)\ndetail:       {}",
                escaped(&e)
            );
            return CheckReport {
                text: out,
                code: exit_code(ProbeResult::Invalid),
                body: None,
                reason: None,
            };
        }
    };
    let _ = writeln!(out, "token:        {}", token.fingerprint());
    let now = Timestamp::now();
    let expires = lifetime.expires_at;
    let _ = writeln!(
        out,
        "expires:      {}",
        expires.map_or_else(|| "not declared by the token".to_string(), |e| e.to_string())
    );
    if lifetime.expired(None, now) {
        let _ = writeln!(out, "verdict:      Expired (no request sent)");
        return CheckReport {
            text: out,
            code: exit_code(ProbeResult::Expired),
            body: None,
            reason: None,
        };
    }
    let unfenced = std::sync::Arc::new(crate::fence::Fence::unfenced());
    let prober = match ProviderClient::new(std::sync::Arc::new(req.egress.clone()), unfenced) {
        Ok(p) => p,
        Err(_) => {
            return CheckReport {
                text: "error: could not build an HTTP client\n".into(),
                code: EXIT_USAGE,
                body: None,
                reason: None,
            };
        }
    };
    let (outcome, raw) = match prober
        .probe_keeping_body(&settings.probe_url(), &token, settings.timeout, &settings.profile)
        .await
    {
        Ok(probed) => probed,
        Err(not_leading) => {
            return CheckReport {
                text: format!("error: {not_leading}\n"),
                code: EXIT_USAGE,
                body: None,
                reason: None,
            };
        }
    };
    let result = verdict::classify(&outcome);
    render::outcome(&mut out, result, &outcome);
    CheckReport {
        text: out,
        code: exit_code(result),
        body: raw.filter(|_| req.show_body).map(|b| ShownBody::of(&b.0)),
        reason: None,
    }
}

/// The name help and completions use: `kubectl tenantcred` when installed as a kubectl plugin.
pub fn invoked_name(argv0: Option<std::ffi::OsString>) -> String {
    let file = argv0
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("tenantcred");
    if file.starts_with("kubectl-") {
        file.replacen('-', " ", 1)
    } else {
        "tenantcred".into()
    }
}

/// How the cluster commands find the cluster, as kubectl users expect.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl KubeArgs {
    /// The client and the namespace to work in.
    pub async fn connect(&self) -> anyhow::Result<(Client, String)> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kc = kube::config::Kubeconfig::read_from(path)?;
                kube::Config::from_custom_kubeconfig(kc, &options).await?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
            (None, None) => kube::Config::infer().await?,
        };
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok((Client::try_from(config)?, ns))
    }
}

/// `tenantcred status -o`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// One row of `tenantcred status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub tenant: String,
    pub provider: String,
    pub health: Standing,
    /// The Ready condition's reason and message.
    pub reason: String,
    pub message: String,
    /// RFC 3339, for scripts.
    pub expires_at: Option<String>,
    pub last_probe_time: Option<String>,
    /// The same, relative to now, for people.
    #[serde(skip)]
    pub expires: String,
    #[serde(skip)]
    pub last_probe: String,
}

/// One credential as `status` shows it; what came from the cluster is escaped, as a terminal
/// must not act on a control character a status patch or an object carried.
pub fn row(tac: &TenantApiCredential, now: Timestamp) -> Row {
    let status = tac.status.clone().unwrap_or_default();
    let c = &status.conditions;
    let ready = conditions::find(c, Type::Ready);
    let health = conditions::standing(tac.spec.suspend, c);
    let ago = |t: Timestamp| {
        let secs = now.as_second() - t.as_second();
        match secs {
            s if s < 0 => format!("in {}", human(-s)),
            s => format!("{} ago", human(s)),
        }
    };
    let shown = |s: &str| escaped(s).into_owned();
    Row {
        namespace: shown(&tac.namespace().unwrap_or_default()),
        name: shown(&tac.name_any()),
        tenant: shown(&tac.spec.tenant),
        provider: shown(tac.spec.provider.as_str()),
        health,
        reason: ready.map_or_else(|| "-".into(), |r| shown(&r.reason)),
        message: ready.map(|r| shown(&r.message)).unwrap_or_default(),
        expires_at: status.expires_at.as_ref().map(|t| t.0.to_string()),
        last_probe_time: status.last_probe_time.as_ref().map(|t| t.0.to_string()),
        expires: status.expires_at.map_or_else(|| "-".into(), |t| ago(t.0)),
        last_probe: status.last_probe_time.map_or_else(|| "never".into(), |t| ago(t.0)),
    }
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn worst_first(rows: &mut [Row]) {
    rows.sort_by(|a, b| (a.health, &a.namespace, &a.name).cmp(&(b.health, &b.namespace, &b.name)));
}

/// The table, worst credential first.
pub fn render_table(mut rows: Vec<Row>, all_namespaces: bool) -> String {
    worst_first(&mut rows);
    let mut table: Vec<Vec<String>> = vec![];
    let mut header = vec![
        "NAME",
        "TENANT",
        "PROVIDER",
        "HEALTH",
        "REASON",
        "EXPIRES",
        "LAST PROBE",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    table.push(header.into_iter().map(str::to_owned).collect());
    for r in rows {
        let mut cells = vec![
            r.name,
            r.tenant,
            r.provider,
            r.health.as_str().into(),
            r.reason,
            r.expires,
            r.last_probe,
        ];
        if all_namespaces {
            cells.insert(0, r.namespace);
        }
        table.push(cells);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in table {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

/// Which credentials `status` shows.
#[derive(Clone, Debug, Default)]
pub struct StatusFilter {
    pub tenant: Option<String>,
    pub provider: Option<String>,
}

impl StatusFilter {
    /// A field selector over the CRD's selectable fields: the API server filters, so a
    /// tenant's view of 100,000 credentials is not 100,000 objects over the wire.
    pub fn field_selector(&self) -> Option<String> {
        let parts: Vec<String> = [("spec.tenant", &self.tenant), ("spec.provider", &self.provider)]
            .into_iter()
            .filter_map(|(field, v)| v.as_ref().map(|v| format!("{field}={v}")))
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

pub async fn status(
    client: Client,
    namespace: Option<&str>,
    filter: &StatusFilter,
    output: Output,
) -> anyhow::Result<String> {
    let api: Api<TenantApiCredential> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut params = ListParams::default();
    if let Some(fields) = filter.field_selector() {
        params = params.fields(&fields);
    }
    let list = api.list(&params).await?;
    let now = Timestamp::now();
    let mut rows: Vec<Row> = list.items.iter().map(|t| row(t, now)).collect();
    let items = |rows: &mut Vec<Row>| {
        worst_first(rows);
        serde_json::json!({ "items": rows })
    };
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&items(&mut rows))? + "\n",
        Output::Yaml => serde_yaml::to_string(&items(&mut rows))?,
        Output::Table if rows.is_empty() => format!(
            "No TenantApiCredentials found{}.\n",
            namespace.map(|n| format!(" in namespace {n}")).unwrap_or_default()
        ),
        Output::Table => render_table(rows, namespace.is_none()),
    })
}

/// Sets `tenantcred.dev/probe-requested-at` to now; the controller probes (within the key's
/// budget) and echoes the value in `status.lastHandledProbeRequest`.
pub async fn probe_now(client: Client, namespace: &str, name: &str) -> kube::Result<String> {
    let api: Api<TenantApiCredential> = Api::namespaced(client, namespace);
    let stamp = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {PROBE_REQUESTED_ANNOTATION: stamp}}});
    let pp = PatchParams {
        field_manager: Some(format!("{FIELD_MANAGER}-cli")),
        ..PatchParams::default()
    };
    api.patch(name, &pp, &Patch::Merge(&patch)).await?;
    Ok(format!(
        "probe requested for {namespace}/{name} at {stamp}\nwatch: kubectl get tac {name} -n {namespace} -o jsonpath='{{.status.lastHandledProbeRequest}}'\n"
    ))
}

#[cfg(test)]
mod tests;
