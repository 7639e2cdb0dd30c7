//! `whet model tiny` end to end, on the real GSM8K data.

mod common;

use common::{shared_data, whet_fails, whet_ok};

#[test]
fn whet_model_tiny_writes_a_hugging_face_folder_from_gsm8k() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny");
    let corpus = data.join("gsm8k/train.jsonl");
    let printed = whet_ok(&["model", "tiny", out.to_str().unwrap(), "--corpus", corpus.to_str().unwrap()]);
    assert!(printed.contains("head size 64") && printed.contains("14,946"), "{printed}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    let made: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("whetstone-model.json")).unwrap()).unwrap();
    assert_eq!(made["model"]["corpus_texts"], 14946, "7,473 questions and their answers");

    let err = whet_fails(&["model", "tiny", out.to_str().unwrap(), "--corpus", corpus.to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
    let missing = tmp.path().join("no-such.jsonl");
    let err =
        whet_fails(&["model", "tiny", tmp.path().join("t2").to_str().unwrap(), "--corpus", missing.to_str().unwrap()]);
    assert!(err.contains("no-such.jsonl"), "{err}");
}
