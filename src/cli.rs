//! Command-line flags. Every flag can also be set with a `PORTCULLIS_<FLAG>` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::settings::Settings;
use crate::vocab::{NamespacedName, parse_duration};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A Kubernetes ingress controller",
    max_term_width = 100
)]
pub struct Args {
    /// Without a command, the controller runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Read Ingress, IngressClass, Secret, Service and EndpointSlice objects from the YAML files in DIR
    /// (re-read on every change) instead of watching a cluster.
    #[arg(long, env = "PORTCULLIS_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig for cluster mode; without it, the in-cluster service account, then `KUBECONFIG`.
    #[arg(
        long,
        env = "PORTCULLIS_KUBECONFIG",
        value_name = "FILE",
        conflicts_with = "manifests"
    )]
    pub kubeconfig: Option<PathBuf>,

    /// Manifest mode: where ACME accounts and issued certificates are kept (created if missing), so a
    /// restart orders nothing while they are valid. Without it, no ACME certificate is ordered.
    #[arg(
        long,
        env = "PORTCULLIS_STATE_DIR",
        value_name = "DIR",
        requires = "manifests"
    )]
    pub state_dir: Option<PathBuf>,

    /// Watch only this namespace (IngressClasses are cluster-scoped and always watched).
    #[arg(long, env = "PORTCULLIS_WATCH_NAMESPACE", value_name = "NS")]
    pub watch_namespace: Option<String>,

    /// Write this Service's address (load balancer, else external IPs, else cluster IP) into the status
    /// of every Ingress served.
    #[arg(long, env = "PORTCULLIS_PUBLISH_SERVICE", value_name = "NS/NAME")]
    pub publish_service: Option<NamespacedName>,

    /// Write these IPs or host names into the status of every Ingress served.
    #[arg(
        long,
        env = "PORTCULLIS_PUBLISH_STATUS_ADDRESS",
        value_name = "ADDR,...",
        value_delimiter = ',',
        conflicts_with = "publish_service"
    )]
    pub publish_status_address: Vec<String>,

    /// Addresses the Gateway API's Gateways are served on, as IPs or CIDR blocks: each programmed
    /// Gateway takes one, and its listeners are bound there. The addresses must be local (or the
    /// process allowed to bind them); without a pool no Gateway is programmed.
    #[arg(
        long,
        env = "PORTCULLIS_GATEWAY_ADDRESSES",
        value_name = "IP|CIDR,...",
        value_delimiter = ',',
        value_parser = parse_address_block
    )]
    pub gateway_addresses: Vec<AddressBlock>,

    /// Name of the Lease used to elect the replica that writes status and Events.
    #[arg(
        long,
        env = "PORTCULLIS_ELECTION_ID",
        default_value = "portcullis-leader"
    )]
    pub election_id: String,

    /// The controller's own namespace, for its Lease (default: `POD_NAMESPACE`, then the service
    /// account's namespace, then `default`).
    #[arg(long, env = "PORTCULLIS_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// HTTPS listener.
    #[arg(long, env = "PORTCULLIS_HTTPS_ADDR", default_value = "0.0.0.0:443")]
    pub https_addr: SocketAddr,

    /// Plain-HTTP listener (redirects to HTTPS, ACME challenges, hosts without TLS).
    #[arg(long, env = "PORTCULLIS_HTTP_ADDR", default_value = "0.0.0.0:80")]
    pub http_addr: SocketAddr,

    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long, env = "PORTCULLIS_ADMIN_ADDR", default_value = "0.0.0.0:10254")]
    pub admin_addr: SocketAddr,

    /// The IngressClass name this controller handles.
    #[arg(long, env = "PORTCULLIS_INGRESS_CLASS", default_value = "portcullis")]
    pub ingress_class: String,

    /// Also handle Ingresses that name no IngressClass.
    #[arg(long, env = "PORTCULLIS_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,

    /// Global settings (YAML): redirects, HSTS, TLS, trusted proxies, upstream defaults, limits.
    /// Re-read on change; a bad file at start is an error (exit code 2), on reload it is ignored.
    #[arg(long, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Secret (NAMESPACE/NAME) served for unknown server names instead of a generated certificate
    /// (overrides `tls.default-certificate` in --config).
    #[arg(
        long,
        env = "PORTCULLIS_DEFAULT_SSL_CERTIFICATE",
        value_name = "NS/NAME"
    )]
    pub default_ssl_certificate: Option<NamespacedName>,

    /// Refuse TLS handshakes whose server name matches no certificate, instead of serving the default
    /// one (overrides `tls.strict-sni` in --config).
    #[arg(long, env = "PORTCULLIS_STRICT_SNI")]
    pub strict_sni: bool,

    /// Let Ingresses annotated `ssl-passthrough: "true"` receive their hosts' TLS connections
    /// unterminated (overrides `tls.ssl-passthrough` in --config).
    #[arg(long, env = "PORTCULLIS_ENABLE_SSL_PASSTHROUGH")]
    pub enable_ssl_passthrough: bool,

    /// After SIGTERM, keep accepting for this long (with /readyz failing) so load balancers stop
    /// sending new connections first.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// After the listeners close, how long in-flight requests get to finish.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Threads that serve traffic: 0 means one per CPU the process may use (affinity and cgroup quota
    /// count); with one, the runtime runs on the main thread.
    #[arg(
        long,
        env = "PORTCULLIS_WORKER_THREADS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub worker_threads: usize,

    /// Log format.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `portcullis=debug` (`RUST_LOG` is used when this is not set).
    #[arg(long, env = "PORTCULLIS_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Write one line per request (route, status, addresses, bytes, durations) at INFO on the log target
    /// `portcullis::access`.
    #[arg(long, env = "PORTCULLIS_ACCESS_LOG")]
    pub access_log: bool,
}

/// One entry of `--gateway-addresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressBlock(ipnet::IpNet);

/// More addresses than any controller serves Gateways on: a typo like `/8` is refused, not expanded.
const MAX_GATEWAY_ADDRESSES: usize = 4096;

fn parse_address_block(s: &str) -> Result<AddressBlock, String> {
    let s = s.trim();
    let net = match s.parse::<std::net::IpAddr>() {
        Ok(ip) => ipnet::IpNet::from(ip),
        Err(_) => s
            .parse::<ipnet::IpNet>()
            .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR block"))?,
    };
    let size = net.hosts().take(MAX_GATEWAY_ADDRESSES + 1).count();
    if size > MAX_GATEWAY_ADDRESSES {
        return Err(format!(
            "{s} has more than {MAX_GATEWAY_ADDRESSES} addresses"
        ));
    }
    Ok(AddressBlock(net))
}

impl Args {
    /// The Gateway address pool, in the order given, without repeats.
    pub fn gateway_pool(&self) -> Vec<std::net::IpAddr> {
        let mut pool: Vec<std::net::IpAddr> = Vec::new();
        for block in &self.gateway_addresses {
            for ip in block.0.hosts() {
                if !pool.contains(&ip) {
                    pool.push(ip);
                }
            }
        }
        pool
    }

    /// Applies the command-line flags that override the configuration file.
    pub fn override_settings(&self, settings: &mut Settings) {
        if self.strict_sni {
            settings.tls.strict_sni = true;
        }
        if self.enable_ssl_passthrough {
            settings.tls.ssl_passthrough = true;
        }
        if let Some(secret) = &self.default_ssl_certificate {
            settings.tls.default_certificate = Some(secret.clone());
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a JSON Schema: of the Helm chart's values (charts/portcullis/values.schema.json), or of
    /// the --config file.
    Schema {
        #[arg(value_enum, default_value_t = SchemaKind::ChartValues)]
        of: SchemaKind,
    },
    /// Report, per Ingress, what Portcullis would serve and how each annotation behaves here (same,
    /// differs, unsupported, invalid). Exit code 0: all the same; 1: something differs; 2: bad input.
    Check(CheckArgs),
}

/// `portcullis check`: what Portcullis would make of Ingresses written for ingress-nginx.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Read the objects from the YAML files in DIR instead of a cluster.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig for reading a cluster (read-only, with the controller's permissions); without it, the
    /// in-cluster service account, then `KUBECONFIG`.
    #[arg(long, value_name = "FILE", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// Check only this namespace.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// The class of the Ingresses to migrate (`spec.ingressClassName` or the legacy annotation); with
    /// no class given, an Ingress is checked when this IngressClass is the default one.
    #[arg(long, value_name = "CLASS", default_value = "nginx")]
    pub ingress_class: String,

    /// An ingress-nginx ConfigMap (YAML) whose keys to translate.
    #[arg(long, value_name = "FILE")]
    pub configmap: Option<PathBuf>,

    /// The same report as text for people or JSON for scripts.
    #[arg(long, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckOutput {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    ChartValues,
    Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ports() {
        let args = Args::try_parse_from(["portcullis"]).unwrap();
        assert_eq!(args.https_addr.to_string(), "0.0.0.0:443");
        assert_eq!(args.http_addr.to_string(), "0.0.0.0:80");
        assert_eq!(args.admin_addr.to_string(), "0.0.0.0:10254");
        assert_eq!(args.ingress_class, "portcullis");
    }
}
