use std::time::Instant;
use whetstone_curation::embed::{minilm_dir, Embedder, SentenceEncoder};
fn main() {
    let ws = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let enc = SentenceEncoder::load(&minilm_dir(&ws).unwrap()).unwrap();
    let text = std::fs::read_to_string(
        ws.join("../shared/data/t0-templates/adversarial_qa_dbert_answer_the_following_q.jsonl"),
    )
    .unwrap();
    let rows: Vec<String> = text
        .lines()
        .take(256)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"].as_str().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = rows.iter().map(|s| s.as_str()).collect();
    let toks: usize = enc.token_ids(&refs).unwrap().iter().map(|t| t.len()).sum();
    let t = Instant::now();
    enc.embed(&refs).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "{} texts, {} tokens, {:.2}s, {:.0} texts/s, {:.0} tokens/s",
        refs.len(),
        toks,
        s,
        refs.len() as f64 / s,
        toks as f64 / s
    );
}
