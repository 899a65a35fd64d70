use super::*;

#[test]
fn defaults_are_valid() {
    BalanceConfig::default().validate().unwrap();
}

#[test]
fn empty_toml_gives_defaults_and_partial_sections_keep_other_defaults() {
    let c: BalanceConfig = toml::from_str("").unwrap();
    assert_eq!(c, BalanceConfig::default());
    let c: BalanceConfig =
        toml::from_str("strategy = \"least_connections\"\n[health]\nrise = 5\n").unwrap();
    assert_eq!(c.strategy, StrategyKind::LeastConnections);
    assert_eq!(c.health.rise, 5);
    assert_eq!(c.health.fall, HealthConfig::default().fall);
}

#[test]
fn unknown_fields_are_refused() {
    let err = toml::from_str::<BalanceConfig>("[health]\nrse = 5\n").unwrap_err();
    assert!(err.to_string().contains("rse"), "{err}");
    let err = toml::from_str::<BalanceConfig>("stratgy = \"random\"\n").unwrap_err();
    assert!(err.to_string().contains("stratgy"), "{err}");
}

#[test]
fn invalid_values_name_the_field() {
    let mut c = BalanceConfig::default();
    c.health.rise = 0;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "balancer.health.rise must be >= 1 and <= 100"
    );
    let mut c = BalanceConfig::default();
    c.health.timeout_ms = c.health.interval_ms + 1;
    assert_eq!(
        c.validate().unwrap_err().field,
        "balancer.health.timeout_ms"
    );
    let mut c = BalanceConfig::default();
    c.outlier.max_ejection_ms = c.outlier.base_ejection_ms - 1;
    assert_eq!(
        c.validate().unwrap_err().field,
        "balancer.outlier.max_ejection_ms"
    );
    let mut c = BalanceConfig::default();
    c.hash.table_size = 65536;
    assert_eq!(c.validate().unwrap_err().field, "balancer.hash.table_size");
    let mut c = BalanceConfig::default();
    c.hash.key = "headr:x".into();
    assert_eq!(c.validate().unwrap_err().field, "balancer.hash.key");
    let mut c = BalanceConfig::default();
    c.retry.budget_ratio = f64::NAN;
    assert_eq!(
        c.validate_at("lb").unwrap_err().field,
        "lb.retry.budget_ratio"
    );
    let mut c = BalanceConfig::default();
    c.sticky.fallback = StrategyKind::Sticky;
    assert_eq!(c.validate().unwrap_err().field, "balancer.sticky.fallback");
    let mut c = BalanceConfig::default();
    c.slow_start.aggression = 0.0;
    assert_eq!(
        c.validate().unwrap_err().field,
        "balancer.slow_start.aggression"
    );
}

#[test]
fn strategy_names_round_trip_and_aliases_parse() {
    for k in StrategyKind::ALL {
        assert_eq!(k.name().parse::<StrategyKind>().unwrap(), k);
        let toml_text = format!("strategy = \"{}\"", k.name());
        assert_eq!(
            toml::from_str::<BalanceConfig>(&toml_text)
                .unwrap()
                .strategy,
            k
        );
    }
    assert_eq!(
        "p2c".parse::<StrategyKind>().unwrap(),
        StrategyKind::P2cPeakEwma
    );
    assert_eq!(
        "least-connections".parse::<StrategyKind>().unwrap(),
        StrategyKind::LeastConnections
    );
    assert!(
        "fastest"
            .parse::<StrategyKind>()
            .unwrap_err()
            .contains("round_robin")
    );
}

#[test]
fn hash_key_sources_parse() {
    assert_eq!(
        "header:X-User".parse::<HashKeySource>().unwrap(),
        HashKeySource::Header("x-user".into())
    );
    assert_eq!(
        "cookie:sid".parse::<HashKeySource>().unwrap(),
        HashKeySource::Cookie("sid".into())
    );
    assert_eq!(
        "query:u".parse::<HashKeySource>().unwrap(),
        HashKeySource::Query("u".into())
    );
    assert_eq!(
        "path".parse::<HashKeySource>().unwrap(),
        HashKeySource::Path
    );
    assert_eq!(
        "client_ip".parse::<HashKeySource>().unwrap(),
        HashKeySource::ClientIp
    );
    assert!("header:".parse::<HashKeySource>().is_err());
}

#[test]
fn primes() {
    assert!(is_prime(65537));
    assert!(is_prime(251));
    assert!(!is_prime(65535));
    assert!(!is_prime(1));
}
