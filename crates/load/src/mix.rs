//! Request mixes and user sessions: which request goes next, and its path and body.
//!
//! Pure and seeded: draws come from an RNG the caller owns (one per generator thread,
//! seeded from the run's seed), so a run's request sequence is reproducible. Holds a
//! small seeded Zipf sampler of its own so `load` does not depend on `shop`. This module
//! must never do I/O.

use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::config::{RequestSpec, SessionSpec};

/// Seeded Zipf sampler over `1..=n`: P(k) proportional to `1 / k^s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Precomputes the cumulative distribution (O(n) memory, n bounded by validation).
    pub fn new(n: u32, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for v in &mut cdf {
            *v /= acc;
        }
        Zipf { cdf }
    }

    /// One draw in `1..=n`.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> u32 {
        let u: f64 = rng.random();
        let i = self.cdf.partition_point(|c| *c < u);
        (i.min(self.cdf.len() - 1) + 1) as u32
    }
}

/// The role a request kind plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A mix request.
    Plain,
    /// Session sign-up.
    Signup,
    /// Session login (its response carries the token).
    Login,
}

/// One request kind, ready to render.
#[derive(Debug, Clone)]
pub(crate) struct Kind {
    pub name: String,
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub auth: bool,
    pub role: Role,
    /// Whether path or body holds a placeholder (else they are sent as built).
    pub templated: bool,
}

/// All kinds of a run: the mix, then sign-up and login when sessions are on.
#[derive(Debug, Clone)]
pub(crate) struct KindTable {
    pub kinds: Vec<Kind>,
    /// Cumulative weights of the mix kinds (indexes 0..mix_len).
    cumulative: Vec<u64>,
    pub signup: Option<usize>,
    pub login: Option<usize>,
}

fn has_placeholder(s: &str) -> bool {
    s.contains('{') && s.contains('}')
}

impl KindTable {
    pub fn new(
        requests: &[RequestSpec],
        default_path: &str,
        session: Option<&SessionSpec>,
    ) -> KindTable {
        let mix: Vec<RequestSpec> = if requests.is_empty() {
            vec![RequestSpec::get(default_path)]
        } else {
            requests.to_vec()
        };
        let mut kinds: Vec<Kind> = mix
            .iter()
            .map(|r| Kind {
                name: r.name.clone(),
                method: r.method.clone(),
                templated: has_placeholder(&r.path)
                    || r.body.as_deref().is_some_and(has_placeholder),
                path: r.path.clone(),
                headers: r.headers.clone(),
                body: r.body.clone(),
                auth: r.auth,
                role: Role::Plain,
            })
            .collect();
        let mut acc = 0u64;
        let cumulative = mix
            .iter()
            .map(|r| {
                acc += r.weight as u64;
                acc
            })
            .collect();
        let (mut signup, mut login) = (None, None);
        if let Some(s) = session {
            let cred = r#"{"username":"{username}","password":"{password}"}"#.to_string();
            for (role, path, slot) in [
                (Role::Signup, &s.signup_path, &mut signup),
                (Role::Login, &s.login_path, &mut login),
            ] {
                *slot = Some(kinds.len());
                kinds.push(Kind {
                    name: format!("POST {path}"),
                    method: http::Method::POST,
                    path: path.clone(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: Some(cred.clone()),
                    auth: false,
                    role,
                    templated: true,
                });
            }
        }
        KindTable {
            kinds,
            cumulative,
            signup,
            login,
        }
    }

    /// A weighted draw from the mix.
    pub fn pick<R: Rng>(&self, rng: &mut R) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        if self.cumulative.len() <= 1 {
            return 0;
        }
        let x = rng.random_range(0..total);
        self.cumulative.partition_point(|c| *c <= x)
    }

    /// Names for reports, by kind index.
    pub fn names(&self) -> Vec<String> {
        self.kinds.iter().map(|k| k.name.clone()).collect()
    }
}

/// Values substituted into templates.
pub(crate) struct Vars<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub n: u64,
}

/// Renders `{product_id}`, `{quantity}`, `{username}`, `{password}`, `{n}`.
pub(crate) fn render<R: Rng>(t: &str, vars: &Vars<'_>, zipf: &Zipf, rng: &mut R) -> String {
    let mut out = String::with_capacity(t.len() + 16);
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        match name {
            "product_id" => out.push_str(&zipf.sample(rng).to_string()),
            "quantity" => out.push_str(&rng.random_range(1..=5u32).to_string()),
            "username" => out.push_str(vars.username),
            "password" => out.push_str(vars.password),
            "n" => out.push_str(&vars.n.to_string()),
            _ => {
                // Not a placeholder (e.g. a JSON brace): keep the brace, rescan after it.
                out.push('{');
                rest = after;
                continue;
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Where a virtual user is in its session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UserState {
    NeedSignup,
    NeedLogin,
    Ready { token: String, left: u32 },
}

/// One virtual user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub name: String,
    pub state: UserState,
    generation: u32,
}

/// The users of one generator thread: idle ones wait in a queue; a new user is created
/// when all are busy, up to a cap.
#[derive(Debug)]
pub(crate) struct Users {
    prefix: String,
    pub users: Vec<User>,
    idle: std::collections::VecDeque<u32>,
    cap: usize,
    per_session: u32,
}

impl Users {
    pub fn new(prefix: String, cap: usize, per_session: u32) -> Users {
        Users {
            prefix,
            users: Vec::new(),
            idle: Default::default(),
            cap,
            per_session,
        }
    }

    /// An idle user (marked busy), or a new one; `None` when all `cap` users are busy.
    pub fn take(&mut self) -> Option<u32> {
        if let Some(u) = self.idle.pop_front() {
            return Some(u);
        }
        if self.users.len() >= self.cap {
            return None;
        }
        let id = self.users.len() as u32;
        self.users.push(User {
            name: format!("{}-{id}-0", self.prefix),
            state: UserState::NeedSignup,
            generation: 0,
        });
        Some(id)
    }

    /// The kind the user's next request must be (`None`: a mix request).
    pub fn next_role(&self, id: u32) -> Role {
        match self.users[id as usize].state {
            UserState::NeedSignup => Role::Signup,
            UserState::NeedLogin => Role::Login,
            UserState::Ready { .. } => Role::Plain,
        }
    }

    /// Records the outcome of the user's request and makes it idle again. `status` is
    /// `None` on a transport error; `token` is the login response's token.
    pub fn finish(&mut self, id: u32, role: Role, status: Option<u16>, token: Option<String>) {
        let per = self.per_session;
        let prefix = &self.prefix;
        let u = &mut self.users[id as usize];
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        match role {
            // 409: the name exists (a retried sign-up that did land): log in anyway.
            Role::Signup if ok || status == Some(409) => u.state = UserState::NeedLogin,
            Role::Login => match (ok, token) {
                (true, Some(t)) => {
                    u.state = UserState::Ready {
                        token: t,
                        left: per,
                    }
                }
                _ => u.state = UserState::NeedLogin,
            },
            Role::Plain => {
                if let UserState::Ready { left, .. } = &mut u.state {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        u.generation += 1;
                        u.name = format!("{prefix}-{id}-{}", u.generation);
                        u.state = UserState::NeedSignup;
                    }
                }
            }
            Role::Signup => {}
        }
        self.idle.push_back(id);
    }
}

/// A thread's RNG, derived from the run seed and thread index.
pub(crate) fn thread_rng(seed: u64, thread: usize) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ (thread as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ids_and_stays_in_range() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = thread_rng(7, 0);
        let mut counts = vec![0u32; 1001];
        for _ in 0..20_000 {
            let k = z.sample(&mut rng);
            assert!((1..=1000).contains(&k));
            counts[k as usize] += 1;
        }
        // P(1) = 1/H(1000) ~ 13.4%; P(2) half of it.
        assert!((2300..3100).contains(&counts[1]), "{}", counts[1]);
        assert!(counts[1] > counts[2] && counts[2] > counts[10]);
    }

    #[test]
    fn render_fills_placeholders_and_keeps_json_braces() {
        let z = Zipf::new(5, 1.0);
        let mut rng = thread_rng(1, 0);
        let v = Vars {
            username: "u1",
            password: "pw",
            n: 3,
        };
        let s = render(
            r#"{"product_id":{product_id},"quantity":{quantity},"u":"{username}"}"#,
            &v,
            &z,
            &mut rng,
        );
        let j: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!((1..=5).contains(&j["product_id"].as_u64().unwrap()));
        assert!((1..=5).contains(&j["quantity"].as_u64().unwrap()));
        assert_eq!(j["u"], "u1");
        assert_eq!(render("/x/{n}", &v, &z, &mut rng), "/x/3");
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let mut a = RequestSpec::get("/a");
        a.weight = 3;
        let b = RequestSpec::get("/b");
        let t = KindTable::new(&[a, b], "/", None);
        let mut rng = thread_rng(3, 0);
        let n_a = (0..8000).filter(|_| t.pick(&mut rng) == 0).count();
        assert!((5700..6300).contains(&n_a), "{n_a}");
    }

    #[test]
    fn users_walk_signup_login_requests_then_renew() {
        let mut u = Users::new("t".into(), 2, 2);
        let id = u.take().unwrap();
        assert_eq!(u.next_role(id), Role::Signup);
        u.finish(id, Role::Signup, Some(201), None);
        let id = u.take().unwrap();
        assert_eq!(u.next_role(id), Role::Login);
        u.finish(id, Role::Login, Some(200), Some("tok".into()));
        let id = u.take().unwrap();
        assert_eq!(u.next_role(id), Role::Plain);
        u.finish(id, Role::Plain, Some(200), None);
        let again = u.take().unwrap();
        assert_eq!(again, id);
        u.finish(again, Role::Plain, Some(200), None);
        assert_eq!(u.next_role(id), Role::Signup);
        assert_eq!(u.users[0].name, "t-0-1");
        let (a, b) = (u.take().unwrap(), u.take().unwrap());
        assert_ne!(a, b);
        assert!(u.take().is_none(), "cap of 2 users");
    }
}
