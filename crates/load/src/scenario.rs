//! Scenario files: a small TOML file with a rate profile, a weighted request mix, user
//! sessions and thresholds. Parsed and validated once; unknown keys are refused and every
//! error names the line or the field.
//!
//! ```toml
//! [profile]
//! kind = "black_friday"     # constant | ramp | step | spike | black_friday | stages
//! base = 50                 # req/s of normal traffic
//! factor = 100              # peak = factor x base
//! normal = "1m"
//! ramp_up = "3m"
//! hold = "2m"
//! ramp_down = "3m"
//! after = "1m"
//!
//! [session]                 # sign up, log in, then the mix with the token
//! requests_per_session = 20
//!
//! [[request]]
//! name = "catalog"
//! weight = 5
//! path = "/catalog"
//!
//! [[request]]
//! name = "add to cart"
//! weight = 2
//! method = "POST"
//! path = "/cart"
//! body = '{"product_id": {product_id}, "quantity": {quantity}}'
//! headers = { content-type = "application/json" }
//! auth = true
//! ```
//!
//! This module never opens sockets; it only turns text into [`RunConfig`] parts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::LoadError;
use crate::config::{Catalog, Mode, RequestSpec, RunConfig, SessionSpec};
use crate::profile::{RateProfile, Stage};
use crate::threshold::Threshold;
use crate::units::{parse_duration, serde_duration};

/// A parsed scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Target URLs; `scaleout load URL` adds to (or, when the file has none, provides) them.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The rate profile (open loop).
    pub profile: Option<ProfileSpec>,
    /// Weighted request mix.
    #[serde(default, rename = "request")]
    pub requests: Vec<RequestFile>,
    /// User sessions.
    pub session: Option<SessionFile>,
    /// Catalogue for `{product_id}`.
    pub catalog: Option<CatalogFile>,
    /// Thresholds, e.g. `["p99<250ms", "errors<0.1%"]`.
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// Per-request timeout, e.g. `"5s"`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Seed for the mix and Zipf draws.
    pub seed: Option<u64>,
    /// Connection cap.
    pub max_connections: Option<usize>,
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    serde_duration::deserialize(d).map(Some)
}

/// A rate profile in a file: `kind` plus the fields that kind uses (others are refused).
///
/// - `constant`: `rate`, `duration`
/// - `ramp`: `from`, `to`, `duration`
/// - `step`: `start`, `step`, `every`, `steps`
/// - `spike`: `base`, `peak`, `before`, `hold`, `after`
/// - `black_friday`: `base`, `factor` (default 100), `normal`, `ramp_up`, `hold`,
///   `ramp_down`, `after`
/// - `stages`: `[[profile.stages]]` with `duration` and `rate` or `from`/`to`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Which shape.
    pub kind: String,
    /// Constant rate, req/s.
    pub rate: Option<f64>,
    /// Length (constant, ramp).
    pub duration: Option<String>,
    /// Ramp start rate.
    pub from: Option<f64>,
    /// Ramp end rate.
    pub to: Option<f64>,
    /// Step: first plateau rate.
    pub start: Option<f64>,
    /// Step: increase per plateau.
    pub step: Option<f64>,
    /// Step: plateau length.
    pub every: Option<String>,
    /// Step: number of plateaus.
    pub steps: Option<u32>,
    /// Spike, Black Friday: normal rate.
    pub base: Option<f64>,
    /// Spike: peak rate.
    pub peak: Option<f64>,
    /// Black Friday: peak multiplier.
    pub factor: Option<f64>,
    /// Spike: normal traffic before.
    pub before: Option<String>,
    /// Black Friday: normal traffic before.
    pub normal: Option<String>,
    /// Black Friday: climb.
    pub ramp_up: Option<String>,
    /// Spike, Black Friday: time at the peak.
    pub hold: Option<String>,
    /// Black Friday: descent.
    pub ramp_down: Option<String>,
    /// Spike, Black Friday: normal traffic after.
    pub after: Option<String>,
    /// Stages.
    pub stages: Option<Vec<StageFile>>,
}

/// One stage in a file: `rate` for a plateau, or `from`/`to` for a ramp.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    /// Length.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub duration: Duration,
    /// Constant rate (instead of from/to).
    pub rate: Option<f64>,
    /// Start rate.
    pub from: Option<f64>,
    /// End rate.
    pub to: Option<f64>,
}

/// A `[[request]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// Name in reports (default `METHOD path`).
    pub name: Option<String>,
    /// Relative weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Method (default GET).
    #[serde(default = "get")]
    pub method: String,
    /// Path template.
    pub path: String,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template.
    pub body: Option<String>,
    /// Needs the session token.
    #[serde(default)]
    pub auth: bool,
}

fn one() -> u32 {
    1
}
fn get() -> String {
    "GET".into()
}

/// `[session]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionFile {
    /// Sign-up path.
    pub signup_path: String,
    /// Login path.
    pub login_path: String,
    /// Mix requests per login.
    pub requests_per_session: u32,
    /// Most users at once.
    pub max_users: usize,
    /// Password of every virtual user.
    pub password: String,
}

impl Default for SessionFile {
    fn default() -> Self {
        let d = SessionSpec::default();
        SessionFile {
            signup_path: d.signup_path,
            login_path: d.login_path,
            requests_per_session: d.requests_per_session,
            max_users: d.max_users,
            password: d.password,
        }
    }
}

/// `[catalog]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogFile {
    /// Product ids 1..=products.
    pub products: u32,
    /// Zipf exponent.
    pub zipf_s: f64,
}

impl Default for CatalogFile {
    fn default() -> Self {
        let d = Catalog::default();
        CatalogFile {
            products: d.products,
            zipf_s: d.zipf_s,
        }
    }
}

/// Reads and parses a scenario file.
pub fn load_scenario(path: &Path) -> Result<Scenario, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Scenario {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse_scenario(&text, &path.display().to_string())
}

/// Parses scenario text; `name` is used in messages.
pub fn parse_scenario(text: &str, name: &str) -> Result<Scenario, LoadError> {
    let err = |reason: String| LoadError::Scenario {
        path: name.to_string(),
        reason,
    };
    let s: Scenario = toml::from_str(text).map_err(|e| err(e.to_string().trim().to_string()))?;
    // Check the parts that need more than types, naming the field.
    if let Some(p) = &s.profile {
        p.to_profile().map_err(|e| err(format!("profile: {e}")))?;
    }
    for (i, r) in s.requests.iter().enumerate() {
        r.to_spec()
            .map_err(|e| err(format!("request[{i}] ({}): {e}", r.path)))?;
    }
    for t in &s.thresholds {
        Threshold::parse(t).map_err(|e| err(format!("thresholds: {e}")))?;
    }
    Ok(s)
}

impl ProfileSpec {
    /// The rate profile this describes; errors name the field.
    pub fn to_profile(&self) -> Result<RateProfile, String> {
        let allowed: &[&str] = match self.kind.as_str() {
            "constant" => &["rate", "duration"],
            "ramp" => &["from", "to", "duration"],
            "step" => &["start", "step", "every", "steps"],
            "spike" => &["base", "peak", "before", "hold", "after"],
            "black_friday" => &[
                "base",
                "factor",
                "normal",
                "ramp_up",
                "hold",
                "ramp_down",
                "after",
            ],
            "stages" => &["stages"],
            other => {
                return Err(format!(
                    "kind {other:?} unknown (constant, ramp, step, spike, black_friday, stages)"
                ));
            }
        };
        let present = [
            ("rate", self.rate.is_some()),
            ("duration", self.duration.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("start", self.start.is_some()),
            ("step", self.step.is_some()),
            ("every", self.every.is_some()),
            ("steps", self.steps.is_some()),
            ("base", self.base.is_some()),
            ("peak", self.peak.is_some()),
            ("factor", self.factor.is_some()),
            ("before", self.before.is_some()),
            ("normal", self.normal.is_some()),
            ("ramp_up", self.ramp_up.is_some()),
            ("hold", self.hold.is_some()),
            ("ramp_down", self.ramp_down.is_some()),
            ("after", self.after.is_some()),
            ("stages", self.stages.is_some()),
        ];
        if let Some((f, _)) = present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
            return Err(format!(
                "field {f:?} is not used by kind {:?} (it takes {})",
                self.kind,
                allowed.join(", ")
            ));
        }
        fn need<T: Copy>(v: Option<T>, f: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("missing field {f:?}"))
        }
        let dur = |v: &Option<String>, f: &str| -> Result<Duration, String> {
            let s = v.as_deref().ok_or_else(|| format!("missing field {f:?}"))?;
            parse_duration(s).map_err(|e| format!("field {f:?}: {e}"))
        };
        match self.kind.as_str() {
            "constant" => {
                RateProfile::constant(need(self.rate, "rate")?, dur(&self.duration, "duration")?)
            }
            "ramp" => RateProfile::ramp(
                need(self.from, "from")?,
                need(self.to, "to")?,
                dur(&self.duration, "duration")?,
            ),
            "step" => RateProfile::step(
                need(self.start, "start")?,
                need(self.step, "step")?,
                dur(&self.every, "every")?,
                need(self.steps, "steps")?,
            ),
            "spike" => RateProfile::spike(
                need(self.base, "base")?,
                need(self.peak, "peak")?,
                dur(&self.before, "before")?,
                dur(&self.hold, "hold")?,
                dur(&self.after, "after")?,
            ),
            "black_friday" => RateProfile::black_friday(
                need(self.base, "base")?,
                self.factor.unwrap_or(100.0),
                dur(&self.normal, "normal")?,
                dur(&self.ramp_up, "ramp_up")?,
                dur(&self.hold, "hold")?,
                dur(&self.ramp_down, "ramp_down")?,
                dur(&self.after, "after")?,
            ),
            _ => {
                let stages = self.stages.as_deref().unwrap_or(&[]);
                let v = stages
                    .iter()
                    .enumerate()
                    .map(|(i, s)| match (s.rate, s.from, s.to) {
                        (Some(r), None, None) => Ok(Stage {
                            duration: s.duration,
                            from_rps: r,
                            to_rps: r,
                        }),
                        (None, Some(f), Some(t)) => Ok(Stage {
                            duration: s.duration,
                            from_rps: f,
                            to_rps: t,
                        }),
                        _ => Err(format!("stages[{i}]: give either rate, or from and to")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                RateProfile::from_stages("stages", v)
            }
        }
    }
}

impl RequestFile {
    fn to_spec(&self) -> Result<RequestSpec, String> {
        let method = http::Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method {:?} is not an HTTP method", self.method))?;
        if !self.path.starts_with('/') {
            return Err("path must start with /".into());
        }
        if self.weight == 0 {
            return Err("weight must be > 0".into());
        }
        for (k, v) in &self.headers {
            http::header::HeaderName::try_from(k.as_str())
                .map_err(|_| format!("headers: {k:?} is not a header name"))?;
            http::header::HeaderValue::try_from(v.as_str())
                .map_err(|_| format!("headers: value of {k:?} is not a header value"))?;
        }
        Ok(RequestSpec {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("{method} {}", self.path)),
            weight: self.weight,
            method,
            path: self.path.clone(),
            headers: self.headers.clone().into_iter().collect(),
            body: self.body.clone(),
            auth: self.auth,
        })
    }
}

impl Scenario {
    /// Applies the scenario to `cfg`: its profile (open loop), mix, session, catalogue,
    /// thresholds and the optional settings. Targets in the file are added after the
    /// ones already in `cfg`.
    pub fn apply(&self, cfg: &mut RunConfig) -> Result<(), LoadError> {
        let field = |f: &str, e: String| LoadError::config(&format!("scenario {f}"), e);
        for t in &self.targets {
            if !cfg.targets.contains(t) {
                cfg.targets.push(t.clone());
            }
        }
        if let Some(p) = &self.profile {
            cfg.mode = Mode::OpenLoop {
                profile: p.to_profile().map_err(|e| field("profile", e))?,
            };
        }
        cfg.requests = self
            .requests
            .iter()
            .map(|r| r.to_spec().map_err(|e| field("request", e)))
            .collect::<Result<_, _>>()?;
        if let Some(s) = &self.session {
            cfg.session = Some(SessionSpec {
                signup_path: s.signup_path.clone(),
                login_path: s.login_path.clone(),
                requests_per_session: s.requests_per_session,
                max_users: s.max_users,
                password: s.password.clone(),
            });
        }
        if let Some(c) = &self.catalog {
            cfg.catalog = Catalog {
                products: c.products,
                zipf_s: c.zipf_s,
            };
        }
        for t in &self.thresholds {
            cfg.thresholds.push(Threshold::parse(t)?);
        }
        if let Some(t) = self.timeout {
            cfg.timeout = t;
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(m) = self.max_connections {
            cfg.max_connections = m;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
thresholds = ["p99<250ms"]
[profile]
kind = "black_friday"
base = 10
normal = "1m"
ramp_up = "2m"
hold = "1m"
ramp_down = "2m"
after = "1m"

[session]
requests_per_session = 5

[[request]]
name = "catalog"
weight = 5
path = "/catalog"

[[request]]
method = "post"
path = "/cart"
body = '{"product_id": {product_id}, "quantity": {quantity}}'
headers = { content-type = "application/json" }
auth = true
"#;

    #[test]
    fn a_shop_scenario_parses_into_a_config() {
        let s = parse_scenario(SHOP, "shop.toml").unwrap();
        let mut cfg = RunConfig::closed_loop("http://127.0.0.1:1/", 1, Duration::from_secs(1));
        s.apply(&mut cfg).unwrap();
        cfg.validate().unwrap();
        let Mode::OpenLoop { profile } = &cfg.mode else {
            panic!("open loop expected")
        };
        assert_eq!(profile.peak_rps(), 1000.0);
        assert_eq!(cfg.requests.len(), 2);
        assert_eq!(cfg.requests[1].name, "POST /cart");
        assert!(cfg.requests[1].auth);
        assert_eq!(cfg.session.as_ref().unwrap().requests_per_session, 5);
        assert_eq!(cfg.thresholds.len(), 1);
    }

    #[test]
    fn the_shipped_black_friday_scenario_is_valid() {
        let text = include_str!("../scenarios/shop-black-friday.toml");
        let s = parse_scenario(text, "shop-black-friday.toml").unwrap();
        let mut cfg =
            RunConfig::open_loop("http://127.0.0.1:1/", 1.0, Duration::from_secs(1)).unwrap();
        s.apply(&mut cfg).unwrap();
        cfg.validate().unwrap();
        let Mode::OpenLoop { profile } = &cfg.mode else {
            panic!("open loop expected")
        };
        assert_eq!(profile.peak_rps(), 2000.0);
        assert_eq!(profile.duration(), Duration::from_secs(600));
        assert_eq!(cfg.requests.len(), 4);
    }

    #[test]
    fn errors_name_the_line_or_field() {
        let e = parse_scenario(
            "[profile]\nkind = \"constant\"\nrate = 10\nduration = \"10s\"\nrat = 3\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("x.toml") && e.contains("rat") && e.contains("line 5"),
            "{e}"
        );
        let e = parse_scenario("[profile]\nkind = \"wobble\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wobble"), "{e}");
        let e = parse_scenario("[[request]]\npath = \"/a\"\nmethod = \"G ET\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("request[0]") && e.contains("method"), "{e}");
        let e = parse_scenario(
            "[profile]\nkind = \"constant\"\nrate = 10\nduration = \"ten\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"duration\""), "{e}");
        let e = parse_scenario(
            "[profile]\nkind = \"constant\"\nrate = 10\nduration = \"1s\"\nfrom = 3\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"from\" is not used by kind \"constant\""),
            "{e}"
        );
        let e = parse_scenario("thresholds = [\"p99<<1\"]\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("thresholds"), "{e}");
    }
}
