//! One TOML file for a deployment: `[balancer]`, `[fleet]`, `[autoscale]`, `[service]`.
//!
//! [`DeploymentConfig::parse`] reads the whole file once, names the offending field by
//! its full path (`fleet.instancez`, `autoscale.hpa.tolerance`) and validates every
//! section before anything listens. Every section has working defaults: an empty file
//! runs the shop on SQLite behind the balancer. This module never starts anything.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::FleetError;
use crate::config::Config as FleetConfig;

/// The service the fleet runs and how Kubernetes should describe it (`[service]`).
///
/// The local command is `fleet.command` when set; otherwise the shop, built from the
/// fields below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Name used for Kubernetes objects and labels (DNS-1123: lowercase, digits, '-').
    pub name: String,
    /// The shop's `--db` URL; placeholders as in `fleet.command` (`{data_dir}`).
    pub db: String,
    /// The shop's `--redis` URL (a comma-separated list of seeds: Redis Cluster); empty:
    /// none. `scaleout k8s` never writes it into a manifest: pods read the Secret's
    /// `redis-url` key instead.
    pub redis: String,
    /// The shop's `--replica` URLs (PostgreSQL streaming replicas). In Kubernetes: the
    /// Secret's `replica-url-1`, `replica-url-2`, ... keys.
    pub replicas: Vec<String>,
    /// The Kubernetes Secret the pods read their state tier and key from (`scaleout k8s`
    /// only): `db-url` (PostgreSQL), `redis-url` when `redis` is set, `replica-url-N`
    /// per replica, `jwt-secret` for JWT sessions. `db` and `redis` above are the local
    /// deployment's (`scaleout up`); no URL or key is ever written into a manifest. Empty:
    /// `scaleout k8s` refuses (it names why).
    pub secret: String,
    /// Port of the shop's separate Prometheus listener in Kubernetes (`--metrics-listen`),
    /// scraped by Prometheus and read back by the HPA through the metrics adapter.
    pub metrics_port: u16,
    /// The shop's `--sessions` store (`jwt`, `redis`, `sql`, `memory`); empty = its default.
    pub sessions: String,
    /// The shop's `--workers` (0 = its default).
    pub workers: u32,
    /// Extra arguments appended to the shop command.
    pub args: Vec<String>,
    /// Liveness path (Kubernetes `livenessProbe`).
    pub liveness_path: String,
    /// Container image for `scaleout k8s` (the repository's Dockerfile builds it).
    /// Default: `scaleout:<this version>`, never `latest`, so a rollout is reproducible.
    pub image: String,
    /// Port the container listens on in Kubernetes.
    pub container_port: u16,
    /// Port the Kubernetes Service exposes.
    pub service_port: u16,
    /// Replaced by `[fleet.resources] cpu`: the pod's requests and limits are the
    /// instance envelope, so the local fleet and the manifests agree. Setting it is an
    /// error that says so.
    pub cpu_request_millis: Option<u32>,
    /// Replaced by `[fleet.resources] memory_mib` (see `cpu_request_millis`).
    pub memory_request_mib: Option<u32>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: "shop".into(),
            db: "sqlite:{data_dir}/shop.db".into(),
            redis: String::new(),
            replicas: Vec::new(),
            secret: String::new(),
            metrics_port: 9090,
            sessions: String::new(),
            workers: 0,
            args: Vec::new(),
            liveness_path: "/healthz".into(),
            image: format!("scaleout:{}", env!("CARGO_PKG_VERSION")),
            container_port: 8080,
            service_port: 80,
            cpu_request_millis: None,
            memory_request_mib: None,
        }
    }
}

/// The shop's JWT key file under `{data_dir}`: `scaleout up` creates it once (random,
/// mode 0600) and every instance reads it, so they all verify each other's tokens.
pub const SHOP_JWT_SECRET_FILE: &str = "shop-jwt-secret";

impl ServiceConfig {
    /// Whether the shop signs JWT sessions (the default) and so needs the key file.
    pub fn uses_jwt(&self) -> bool {
        self.sessions.is_empty() || self.sessions == "jwt"
    }

    /// The shop command template (placeholders unexpanded).
    pub fn shop_command(&self) -> Vec<String> {
        let mut argv: Vec<String> = [
            "{exe}",
            "shop",
            "--listen",
            "{addr}",
            "--instance-id",
            "{id}",
            "--db",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(self.db.clone());
        if !self.redis.is_empty() {
            argv.push("--redis".into());
            argv.push(self.redis.clone());
        }
        for r in &self.replicas {
            argv.push("--replica".into());
            argv.push(r.clone());
        }
        if self.uses_jwt() {
            argv.push("--jwt-secret-file".into());
            argv.push(format!("{{data_dir}}/{SHOP_JWT_SECRET_FILE}"));
        }
        argv.extend(self.shop_options());
        argv
    }

    /// `--sessions`, `--workers` and the extra args, shared by the local and the
    /// Kubernetes command lines.
    pub fn shop_options(&self) -> Vec<String> {
        let mut argv = Vec::new();
        if !self.sessions.is_empty() {
            argv.push("--sessions".into());
            argv.push(self.sessions.clone());
        }
        if self.workers > 0 {
            argv.push("--workers".into());
            argv.push(self.workers.to_string());
        }
        argv.extend(self.args.iter().cloned());
        argv
    }

    fn validate(&self) -> Result<(), FleetError> {
        let bad = |field: &str, reason: &str| FleetError::Config {
            field: format!("service.{field}"),
            reason: reason.into(),
        };
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !dns(&self.name) {
            return Err(bad(
                "name",
                "must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'",
            ));
        }
        if self.db.trim().is_empty() {
            return Err(bad("db", "must not be empty"));
        }
        if !self.sessions.is_empty()
            && !["jwt", "redis", "sql", "memory"].contains(&self.sessions.as_str())
        {
            return Err(bad("sessions", "must be one of jwt, redis, sql, memory"));
        }
        if self.workers > 1024 {
            return Err(bad("workers", "must be <= 1024"));
        }
        // The same rules as the shop's own check (`ShopConfig::validate`), named by this
        // file's fields: caught here, `scaleout up` and `scaleout k8s` refuse the file
        // instead of starting pods or instances that exit at once.
        if self.sessions == "redis" && self.redis.is_empty() {
            return Err(bad(
                "sessions",
                "`redis` sessions need a Redis URL: set service.redis (e.g. \"redis://127.0.0.1:6379\")",
            ));
        }
        if !self.redis.is_empty()
            && self.redis.split(',').any(|u| {
                let u = u.trim();
                !(u.starts_with("redis://") || u.starts_with("rediss://"))
            })
        {
            return Err(bad(
                "redis",
                "must be redis://HOST:PORT (a comma-separated list for Redis Cluster)",
            ));
        }
        if !self.replicas.is_empty() && !is_postgres(&self.db) {
            return Err(bad(
                "replicas",
                "replicas need a PostgreSQL primary (service.db = \"postgres://...\")",
            ));
        }
        if let Some(r) = self.replicas.iter().find(|r| !is_postgres(r)) {
            return Err(bad("replicas", &format!("`{r}` is not a postgres:// URL")));
        }
        if !self.secret.is_empty() && !dns(&self.secret) {
            return Err(bad(
                "secret",
                "must be a Kubernetes name: 1-63 lowercase letters, digits or '-'",
            ));
        }
        if self.metrics_port == 0 || self.metrics_port == self.container_port {
            return Err(bad(
                "metrics_port",
                "must be > 0 and differ from container_port",
            ));
        }
        if !self.liveness_path.starts_with('/') {
            return Err(bad("liveness_path", "must start with '/'"));
        }
        if self.image.trim().is_empty() {
            return Err(bad("image", "must not be empty"));
        }
        if self.container_port == 0 {
            return Err(bad("container_port", "must be > 0"));
        }
        if self.service_port == 0 {
            return Err(bad("service_port", "must be > 0"));
        }
        if self.cpu_request_millis.is_some() {
            return Err(bad(
                "cpu_request_millis",
                "replaced by [fleet.resources] cpu (cores): requests and limits both come from the instance envelope",
            ));
        }
        if self.memory_request_mib.is_some() {
            return Err(bad(
                "memory_request_mib",
                "replaced by [fleet.resources] memory_mib: requests and limits both come from the instance envelope",
            ));
        }
        Ok(())
    }
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The whole deployment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploymentConfig {
    /// The balancer (`proxy::Config`).
    pub balancer: proxy::config::Config,
    /// The fleet supervisor.
    pub fleet: FleetConfig,
    /// The autoscaler.
    pub autoscale: autoscale::Config,
    /// The service run by the fleet.
    pub service: ServiceConfig,
    /// The worker fleet scaled on the job queue's backlog (off unless enabled).
    pub workers: crate::workers::WorkersConfig,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        let mut autoscale = autoscale::Config {
            min_instances: 1,
            max_instances: 4,
            ..autoscale::Config::default()
        };
        autoscale.policy = autoscale::PolicyKind::Default;
        DeploymentConfig {
            // No admin listener here: `scaleout up` adds one (127.0.0.1:8081 by default)
            // with a generated token when the file names none (see `with_admin`).
            balancer: proxy::config::Config::default(),
            fleet: FleetConfig::default(),
            autoscale,
            service: ServiceConfig::default(),
            workers: crate::workers::WorkersConfig::default(),
        }
    }
}

impl DeploymentConfig {
    /// Parses and validates a deployment file's text.
    pub fn parse(text: &str) -> Result<DeploymentConfig, FleetError> {
        let de = toml::Deserializer::parse(text).map_err(|e| FleetError::Config {
            field: "(toml)".into(),
            reason: e.to_string(),
        })?;
        let cfg: DeploymentConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            FleetError::Config {
                field: if path.is_empty() || path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                reason: e.into_inner().message().to_string(),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a deployment file.
    pub fn load(path: &Path) -> Result<DeploymentConfig, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|e| FleetError::Config {
            field: "(file)".into(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Validates every section, naming the field by its full path.
    pub fn validate(&self) -> Result<(), FleetError> {
        let mut balancer = self.balancer.clone();
        if balancer.admin.listen.is_some() && balancer.admin.token.is_none() {
            // `scaleout up` generates the token into `{data_dir}/admin-token` before the
            // balancer binds (see `with_admin`), as the example file says.
            balancer.admin.token = Some("x".repeat(32));
        }
        balancer.validate().map_err(|e| FleetError::Config {
            field: if e.field.starts_with("balancer") {
                e.field.clone()
            } else {
                format!("balancer.{}", e.field)
            },
            reason: e.message.clone(),
        })?;
        self.fleet.validate()?;
        self.autoscale.validate().map_err(|e| match e {
            autoscale::ConfigError::Invalid { field, message } => FleetError::Config {
                field: format!("autoscale.{field}"),
                reason: message,
            },
            autoscale::ConfigError::Parse(m) => FleetError::Config {
                field: "autoscale".into(),
                reason: m,
            },
        })?;
        self.service.validate()?;
        self.workers.validate()?;
        let a = &self.autoscale;
        if a.max_instances > crate::config::MAX_INSTANCES {
            return Err(FleetError::Config {
                field: "autoscale.max_instances".into(),
                reason: format!(
                    "a local fleet runs at most {} instances",
                    crate::config::MAX_INSTANCES
                ),
            });
        }
        if self.fleet.instances < a.min_instances || self.fleet.instances > a.max_instances {
            return Err(FleetError::Config {
                field: "fleet.instances".into(),
                reason: format!(
                    "must be within autoscale.min_instances..=max_instances ({}..={})",
                    a.min_instances, a.max_instances
                ),
            });
        }
        Ok(())
    }

    /// Sets the admin listener when the file set none, generating a token when none is
    /// set (written to `{data_dir}/admin-token`, mode 0600). Returns where the token is.
    pub fn with_admin(
        &mut self,
        listen: std::net::SocketAddr,
    ) -> Result<Option<std::path::PathBuf>, FleetError> {
        if self.balancer.admin.listen.is_none() {
            self.balancer.admin.listen = Some(listen);
        }
        if self.balancer.admin.token.is_some() {
            return Ok(None);
        }
        let token = random_token()?;
        let dir = &self.fleet.data_dir;
        let io = |e: std::io::Error| FleetError::Config {
            field: "fleet.data_dir".into(),
            reason: format!("cannot write the admin token under {}: {e}", dir.display()),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("admin-token");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            f.write_all(token.as_bytes()).map_err(io)?;
        }
        self.balancer.admin.token = Some(token);
        Ok(Some(path))
    }

    /// The fleet config with the command template resolved: `fleet.command` when set,
    /// else the shop built from `[service]`.
    pub fn resolved_fleet(&self) -> FleetConfig {
        let mut f = self.fleet.clone();
        if f.command.is_empty() {
            f.command = self.service.shop_command();
        }
        f
    }
}

/// 32 hex characters from the kernel's random source.
pub fn random_token() -> Result<String, FleetError> {
    use std::io::Read;
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| FleetError::Spawn(format!("/dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_working_defaults() {
        let c = DeploymentConfig::parse("").unwrap();
        assert_eq!(c.fleet.instances, 2);
        assert_eq!(c.autoscale.min_instances, 1);
        assert_eq!(c.autoscale.max_instances, 4);
        assert_eq!(c.balancer.listen.port(), 8080);
        assert_eq!(c.balancer.admin.listen, None);
        let cmd = c.resolved_fleet().command;
        assert_eq!(&cmd[..2], &["{exe}".to_string(), "shop".to_string()]);
        assert!(cmd.contains(&"sqlite:{data_dir}/shop.db".to_string()));
        assert!(cmd.contains(&"{data_dir}/shop-jwt-secret".to_string()));
    }

    #[test]
    fn unknown_fields_are_named_with_their_section() {
        for (text, field) in [
            ("[fleet]\ninstancez = 3", "fleet"),
            ("[service]\nimagez = \"x\"", "service"),
            ("[autoscale]\nmin_instance = 1", "autoscale"),
            ("[balancerr]\n", "balancerr"),
        ] {
            let err = DeploymentConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }

    #[test]
    fn invalid_values_are_named() {
        for (text, field) in [
            ("[fleet]\ninstances = 0", "fleet.instances"),
            ("[fleet]\ninstances = 9", "fleet.instances"),
            (
                "[autoscale]\nmin_instances = 3\nmax_instances = 2",
                "autoscale.max_instances",
            ),
            ("[service]\nname = \"Shop\"", "service.name"),
            ("[service]\nsessions = \"cookies\"", "service.sessions"),
            ("[fleet]\ninstances = \"two\"", "fleet.instances"),
        ] {
            let err = DeploymentConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: expected {field} in {err}");
        }
    }

    #[test]
    fn the_example_file_parses_to_the_defaults_it_documents() {
        let c = DeploymentConfig::parse(include_str!("../scaleout.example.toml")).unwrap();
        let d = DeploymentConfig::default();
        assert_eq!(c.fleet, d.fleet);
        // The one departure: the Secret `scaleout k8s` needs (no default name).
        assert_eq!(c.service.secret, "shop-state");
        let service = crate::ServiceConfig {
            secret: String::new(),
            ..c.service.clone()
        };
        assert_eq!(service, d.service);
        assert_eq!(c.autoscale, d.autoscale);
        assert_eq!(c.balancer, d.balancer);
    }

    #[test]
    fn admin_defaults_get_a_private_token() {
        let dir = std::env::temp_dir().join(format!("fleet-admin-{}", std::process::id()));
        let mut c = DeploymentConfig::default();
        c.fleet.data_dir = dir.clone();
        let path = c
            .with_admin("127.0.0.1:8081".parse().unwrap())
            .unwrap()
            .unwrap();
        c.validate().unwrap();
        let token = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Some(token.clone()), c.balancer.admin.token);
        assert_eq!(token.len(), 32);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "token readable by others: {mode:o}");
        assert_ne!(random_token().unwrap(), token);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_example_admin_section_uncommented_gets_a_generated_token() {
        // As the example's comment says: a listen address without a token is not an
        // error; `up` generates the token into the data dir (mode 0600).
        let text = include_str!("../scaleout.example.toml")
            .replace("# [balancer.admin]", "[balancer.admin]")
            .replace(
                "# listen = \"127.0.0.1:8081\"",
                "listen = \"127.0.0.1:18081\"",
            );
        let mut c = DeploymentConfig::parse(&text).expect("admin without token parses");
        assert_eq!(
            c.balancer.admin.listen,
            Some("127.0.0.1:18081".parse().unwrap())
        );
        assert_eq!(c.balancer.admin.token, None);
        let dir = std::env::temp_dir().join(format!("fleet-admin-ex-{}", std::process::id()));
        c.fleet.data_dir = dir.clone();
        let path = c
            .with_admin("127.0.0.1:8081".parse().unwrap())
            .unwrap()
            .expect("a token file");
        // The file's listen address wins over `up`'s default.
        assert_eq!(
            c.balancer.admin.listen,
            Some("127.0.0.1:18081".parse().unwrap())
        );
        let token = std::fs::read_to_string(&path).unwrap();
        assert_eq!(c.balancer.admin.token.as_deref(), Some(token.as_str()));
        // And the balancer itself accepts the result.
        c.balancer.validate().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn redis_sessions_without_a_redis_url_are_refused_by_name() {
        let err = DeploymentConfig::parse("[service]\nsessions = \"redis\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("service.sessions"), "{err}");
        assert!(err.contains("service.redis"), "{err}");
        let ok = DeploymentConfig::parse(
            "[service]\nsessions = \"redis\"\nredis = \"redis://127.0.0.1:6379\"",
        )
        .unwrap();
        let cmd = ok.resolved_fleet().command.join(" ");
        assert!(cmd.contains("--redis redis://127.0.0.1:6379"), "{cmd}");
        assert!(cmd.contains("--sessions redis"), "{cmd}");
        for (text, field) in [
            ("[service]\nredis = \"127.0.0.1:6379\"", "service.redis"),
            (
                "[service]\nreplicas = [\"postgres://r/x\"]",
                "service.replicas",
            ),
            ("[service]\nsecret = \"Shop_State\"", "service.secret"),
            ("[service]\nmetrics_port = 8080", "service.metrics_port"),
        ] {
            let err = DeploymentConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }

    #[test]
    fn service_options_reach_the_shop_command() {
        let c = DeploymentConfig::parse(
            "[service]\nsessions = \"jwt\"\nworkers = 2\ndb = \"sqlite:/tmp/x.db\"",
        )
        .unwrap();
        let cmd = c.resolved_fleet().command.join(" ");
        assert!(
            cmd.ends_with(
                "--db sqlite:/tmp/x.db --jwt-secret-file {data_dir}/shop-jwt-secret --sessions jwt --workers 2"
            ),
            "{cmd}"
        );
        let own = DeploymentConfig::parse("[fleet]\ncommand = [\"/bin/srv\", \"{port}\"]").unwrap();
        assert_eq!(own.resolved_fleet().command, vec!["/bin/srv", "{port}"]);
    }
}
