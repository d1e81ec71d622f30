//! The configuration file and environment: every key, overrides, and errors that name the key.

use super::*;

const GOOD: &str = r#"
    [node]
    route = "a"
    bind = "127.0.0.1:4001"
    members = ["127.0.0.1:4002", "127.0.0.1:4003"]
    insecure_plaintext = true
    drop_time_ms = 3000

    [manager]
    context = "shop"
    kind = "backup"
    backups = 2
    send_mode = "sync-ack"
    max_active_sessions = 10000
    expire_sessions_on_shutdown = true
    replicate_attributes = "^(user|cart)$"
    max_sessions_per_principal = 2
    max_sessions_policy = "refuse"

    [layer]
    cookie_name = "SHOPSESSION"
    serialize_requests = true
"#;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_good_file_gives_every_key() {
    let c = Config::from_toml(GOOD, "good.toml").unwrap();
    assert_eq!(c.node.route, "a");
    assert_eq!(c.node.members.len(), 2);
    assert_eq!((c.manager.kind, c.manager.backups), (ManagerKindConfig::Backup, 2));
    assert_eq!(c.manager.send_mode, SendModeConfig::SyncAck);
    assert_eq!(c.manager.max_active_sessions, Some(10000));
    assert_eq!(
        (c.manager.max_sessions_per_principal, c.manager.max_sessions_policy),
        (Some(2), MaxSessionsPolicyConfig::Refuse)
    );
    assert!(c.manager.expire_sessions_on_shutdown && c.layer.serialize_requests);
    // Unset keys keep their defaults.
    assert_eq!(c.manager.max_inactive_secs, 1800);
    assert!(c.channel().is_ok());
}

#[test]
fn environment_variables_override_the_file() {
    let c = Config::from_toml_and_env(
        GOOD,
        "good.toml",
        env(&[
            ("TRIBES_MANAGER_SEND_MODE", "use-ack"),
            ("TRIBES_MANAGER_BACKUPS", "1"),
            ("TRIBES_NODE_ROUTE", "b"),
            ("TRIBES_NODE_MEMBERS", r#"["127.0.0.1:5000"]"#),
            ("TRIBES_LAYER_SERIALIZE_REQUESTS", "false"),
            // Not a config section: left alone (the demo's own flags use such names).
            ("TRIBES_ROUTE", "ignored"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c.manager.send_mode, SendModeConfig::UseAck);
    assert_eq!(c.manager.backups, 1);
    assert_eq!(c.node.route, "b");
    assert_eq!(c.node.members, vec!["127.0.0.1:5000".parse::<SocketAddr>().unwrap()]);
    assert!(!c.layer.serialize_requests);
}

#[test]
fn a_bad_key_is_named_with_what_is_expected() {
    let e = Config::from_toml(&GOOD.replace("send_mode", "send_mod"), "bad.toml").unwrap_err();
    let m = e.to_string();
    assert!(
        m.starts_with("bad.toml: ") && m.contains("unknown field `send_mod`") && m.contains("send_mode"),
        "{m}"
    );
    let e = Config::from_toml(&GOOD.replace("\"sync-ack\"", "\"sync\""), "bad.toml").unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("send_mode") && m.contains("`sync-ack`") && m.contains("`use-ack`"),
        "{m}"
    );
    let e = Config::from_toml_and_env(GOOD, "good.toml", env(&[("TRIBES_MANAGER_BAKUPS", "2")])).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("TRIBES_* environment") && m.contains("bakups") && m.contains("backups"),
        "{m}"
    );
    let e = Config::from_toml(&GOOD.replace("route = \"a\"", "route = \"a.b\""), "bad.toml").unwrap_err();
    let m = e.to_string();
    assert!(
        m.starts_with("node.route (or TRIBES_NODE_ROUTE) = \"a.b\": ") && m.contains("choose"),
        "{m}"
    );
    let e = Config::from_toml(&GOOD.replace("backups = 2", "backups = 0"), "bad.toml").unwrap_err();
    assert!(e.to_string().contains("manager.backups"), "{e}");
    let e = Config::from_toml(
        &GOOD.replace("max_sessions_per_principal = 2", "max_sessions_per_principal = 0"),
        "bad.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("manager.max_sessions_per_principal"), "{e}");
    let e = Config::from_toml(&GOOD.replace("insecure_plaintext = true", ""), "bad.toml").unwrap_err();
    assert!(
        e.to_string().contains("node.cluster_key_file") && e.to_string().contains("keygen"),
        "{e}"
    );
    let e = Config::from_toml(&GOOD.replace("^(user|cart)$", "(unclosed"), "bad.toml").unwrap_err();
    assert!(e.to_string().contains("manager.replicate_attributes"), "{e}");
    // The parser's error is the source, and still in the message.
    let parser = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<regex::Error>());
    assert!(parser.is_some(), "{e:?}");
    assert!(e.to_string().contains("unclosed group"), "{e}");
    let e = Config::from_toml("[node", "bad.toml").unwrap_err();
    assert!(
        std::error::Error::source(&e).is_some_and(|s| s.is::<toml::de::Error>()),
        "{e:?}"
    );
    let e = Config::from_toml("[node]\nbind = \"127.0.0.1:1\"\ninsecure_plaintext = true", "bad.toml").unwrap_err();
    assert!(e.to_string().contains("missing field `route`"), "{e}");
}
