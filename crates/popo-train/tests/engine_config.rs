//! The `[rollout]` engine keys (engine/config.rs) as a user sets them: one `--set` switches a
//! recipe to vLLM, the keys round-trip through a run's config.toml, and bad settings are errors
//! naming the key.

use anyhow::Result;
use popo_train::config::{ConfigBuilder, TrainConfig};
use popo_train::engine::config::{EngineKind, SyncMode};

fn build(sets: &[&str]) -> Result<TrainConfig> {
    let mut b = ConfigBuilder::new()
        .set("model.path=m")?
        .set("data.path=d")?;
    for s in sets {
        b = b.set(s)?;
    }
    b.build()
}

const VLLM: &[&str] = &[
    "rollout.engine=vllm",
    r#"rollout.servers=["http://127.0.0.1:8000", "http://10.0.0.2:8000/"]"#,
    "rollout.weights_dir=/shared/w",
];

#[test]
fn one_set_switches_the_engine_and_the_keys_round_trip() {
    assert_eq!(build(&[]).unwrap().rollout.engine.kind, EngineKind::Popo);
    let c = build(VLLM).unwrap();
    let e = &c.rollout.engine;
    assert_eq!(e.kind, EngineKind::Vllm);
    assert_eq!(e.servers.len(), 2);
    assert_eq!((e.tis_cap, e.sync), (2.0, SyncMode::Reload));
    let text = c.to_toml().unwrap();
    assert!(text.contains("engine = \"vllm\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    c.save(&path).unwrap();
    assert_eq!(TrainConfig::from_file(&path).unwrap(), c);
}

#[test]
fn bad_engine_settings_are_errors_naming_the_key() {
    let err = |extra: &[&str]| {
        let mut sets = VLLM.to_vec();
        sets.extend_from_slice(extra);
        format!("{:#}", build(&sets).unwrap_err())
    };
    // `lora` is for LoRA runs, and a LoRA run syncs only that way.
    assert!(err(&["rollout.sync=lora"]).contains("model.lora.r"));
    let e = err(&["model.lora.r=8"]);
    assert!(e.contains("rollout.sync = \"lora\""), "{e}");
    let mut lora = VLLM.to_vec();
    lora.extend_from_slice(&["model.lora.r=8", "rollout.sync=lora"]);
    assert_eq!(build(&lora).unwrap().rollout.engine.sync, SyncMode::Lora);
    assert!(err(&["rollout.weights_dir="]).contains("rollout.weights_dir"));
    assert!(err(&["rollout.servers=[]"]).contains("rollout.servers"));
    assert!(err(&[r#"rollout.servers=["localhost:8000"]"#]).contains("localhost:8000"));
    assert!(err(&["rollout.request_timeout_s=0"]).contains("rollout.request_timeout_s"));
    assert!(err(&["rollout.tis_cap=-1"]).contains("rollout.tis_cap"));
    assert!(err(&["rollout.engin=vllm"]).contains("unknown config key `rollout.engin`"));
    let e = err(&["rollout.engine=sglang"]);
    assert!(e.contains("rollout.engine"), "{e}");
    let tiny = ConfigBuilder::new().set("rollout.engine=vllm").unwrap();
    let tiny = tiny.set(r#"rollout.servers=["http://h:1"]"#).unwrap();
    let msg = format!(
        "{:#}",
        tiny.set("rollout.weights_dir=w")
            .unwrap()
            .build()
            .unwrap_err()
    );
    assert!(msg.contains("model.path"), "{msg}");
}
