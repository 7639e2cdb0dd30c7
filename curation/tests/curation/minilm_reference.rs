//! all-MiniLM-L6-v2 on candle matches reference embeddings computed independently (float64 numpy BERT).

use std::path::{Path, PathBuf};

use whetstone_curation::embed::{minilm_dir, Embedder, SentenceEncoder};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("WHETSTONE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/data"));
    dir.join("minilm-reference.json").exists().then_some(dir)
}

#[test]
fn minilm_matches_the_reference_embeddings() {
    let (Some(model), Some(data)) = (minilm_dir(&workspace()), shared_data()) else {
        eprintln!("skipped: no MiniLM model (run scripts/fetch-minilm.sh) or no shared data");
        return;
    };
    let encoder = SentenceEncoder::load(&model).unwrap();
    assert_eq!(encoder.dim(), 384);
    assert_eq!(encoder.max_tokens(), 256);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("minilm-reference.json")).unwrap()).unwrap();
    let rows = reference["rows"].as_array().unwrap();
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&""), "the reference includes the empty string");
    let ids = encoder.token_ids(&texts).unwrap();
    let vectors = encoder.embed(&texts).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let want_ids: Vec<u32> =
            row["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids[i], want_ids, "token ids of {:?}", texts[i]);
        let want: Vec<f64> = row["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = &vectors[i * 384..(i + 1) * 384];
        let dot: f64 = got.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
        let norms = got.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt()
            * want.iter().map(|b| b * b).sum::<f64>().sqrt();
        let cosine = dot / norms;
        assert!(cosine >= 0.999, "{:?}: cosine {cosine}", texts[i]);
        eprintln!("{:>8.6}  {:?}", cosine, texts[i]);
    }
    // The pair sentence-transformers documents: cos("A man is eating food.", "A man is eating a piece of bread.").
    let dot01: f32 = (0..384).map(|k| vectors[k] * vectors[384 + k]).sum();
    assert!((dot01 - 0.7553).abs() < 0.002, "{dot01}");
    // Batching does not change a vector: one text alone gives the same embedding.
    let alone = encoder.embed(&texts[1..2]).unwrap();
    let drift: f32 = alone.iter().zip(&vectors[384..768]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(drift < 1e-4, "{drift}");
}
