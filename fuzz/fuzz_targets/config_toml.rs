//! Fuzzes config parsing: the proxy's `[balancer]` TOML (`proxy::parse_toml`) and the
//! balancing core's own section (`balance::BalanceConfig` + `validate`).
//!
//! Properties: never panics on any text; an accepted proxy config also passes the core's
//! validation (the proxy must not start with settings the core refuses); a rejected one
//! names a field (under `balancer`, or the unknown top-level section itself).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match proxy::parse_toml(text) {
        Ok(config) => {
            let core = config.balance();
            if let Err(e) = core.validate() {
                panic!("proxy accepted a config the core refuses: {e}");
            }
        }
        Err(e) => {
            // Unknown top-level sections are named by themselves, not under `balancer`.
            assert!(!e.field.is_empty(), "error names no field: {e:?}");
        }
    }
    if let Ok(core) = toml::from_str::<balance::BalanceConfig>(text)
        && let Err(e) = core.validate()
    {
        assert!(e.field.starts_with("balancer."), "{e}");
    }
});
