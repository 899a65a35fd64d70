//! End-to-end: a session scenario against two real `scaleout shop` instances sharing one
//! SQLite file with JWT sessions. Virtual users sign up and log in (on whichever instance
//! their connection goes to), then add to and read their carts with the Bearer token on
//! both instances; every logged-in request must succeed on every instance.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use testkit::{ChildGuard, free_addr, temp_dir, wait_http_ok};

const BIN: &str = env!("CARGO_BIN_EXE_scaleout");

fn shop(name: &str, addr: SocketAddr, db: &str) -> ChildGuard {
    ChildGuard::spawn(
        name,
        Command::new(BIN).args([
            "shop",
            "--listen",
            &addr.to_string(),
            "--instance-id",
            name,
            "--db",
            db,
            "--sessions",
            "jwt",
            "--jwt-secret",
            "load-test-secret-0123456789abcdef",
            "--expected-instances",
            "2",
            "--workers",
            "1",
        ]),
    )
}

#[test]
fn logged_in_requests_succeed_on_every_instance() {
    let dir = temp_dir("load-shop");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    let (a, b) = (free_addr(), free_addr());
    let _a = shop("shop-a", a, &db);
    wait_http_ok(a, "/readyz", Duration::from_secs(90));
    let _b = shop("shop-b", b, &db);
    wait_http_ok(b, "/readyz", Duration::from_secs(90));

    let scn = dir.join("session.toml");
    std::fs::write(
        &scn,
        r#"
[session]
requests_per_session = 6

[catalog]
products = 1000

[[request]]
name = "catalog"
path = "/catalog"

[[request]]
name = "add to cart"
weight = 2
method = "POST"
path = "/cart"
body = '{"product_id": {product_id}, "quantity": {quantity}}'
headers = { content-type = "application/json" }
auth = true

[[request]]
name = "view cart"
weight = 2
path = "/cart"
auth = true
"#,
    )
    .unwrap();
    let json = dir.join("r.json");
    // Two connection slots, one per instance (slots take targets in turn and take jobs in
    // turn), so a user's requests land on both instances whichever issued its token.
    let out = Command::new(BIN)
        .args([
            "load",
            &format!("http://{a}/"),
            &format!("http://{b}/"),
            "--rate",
            "30",
            "--duration",
            "6s",
            "--connections",
            "2",
            "--max-connections",
            "2",
            "--timeout",
            "10s",
            "--min-rate",
            "off",
            "--scenario",
            scn.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--progress",
            "off",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprintln!("{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let kind = |name: &str| {
        v["per_kind"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("no kind {name} in {v}"))
            .clone()
    };
    for name in [
        "POST /signup",
        "POST /login",
        "add to cart",
        "view cart",
        "catalog",
    ] {
        let k = kind(name);
        assert!(k["sent"].as_u64().unwrap() > 0, "{name}: {k}");
        assert_eq!(k["completed"], k["sent"], "{name}: {k}");
        assert_eq!(k["errors"]["total"], 0, "{name} had errors: {k}\n{stdout}");
    }
    let logins = kind("POST /login")["sent"].as_u64().unwrap();
    assert!(logins >= 5, "several sessions ran: {logins}");
    let targets = v["per_target"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    for t in targets {
        let sent = t["sent"].as_u64().unwrap();
        assert!(sent >= 20, "each instance served a share: {t}");
        assert_eq!(
            t["errors"]["total"], 0,
            "instance {} had errors: {t}",
            t["name"]
        );
    }
}
