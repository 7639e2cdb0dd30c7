// The llama.cpp contestant of scripts/bench_generate.py: sampling from a GGUF file on the CPU with llama.cpp,
// through node-llama-cpp's prebuilt binary (installed into .cache/node by scripts/bench-setup.sh's
// bench_node_llama_cpp; nothing is downloaded or compiled here).
//
//   node scripts/llama_cpp_generate.mjs --model FILE.gguf --prompts PROMPTS.json [--samples 4 --new-tokens 128
//        --temperature 0.8 --sequences 32 --threads 2 --seed 0 --limit N --out RESULT.json]
//
// PROMPTS.json: a JSON array of prompt strings, already through the chat template (bench_generate.py writes it
// with the tokenizer's template, the text the other contestants are given); they are tokenized as raw text with
// special tokens parsed, no template applied here and no BOS added. Each prompt is sampled --samples times
// (prompt-major, as transformers' batches are), at --temperature with no top-k, top-p, min-p or repeat penalty
// (transformers: top_k=0, top_p=1.0), for at most --new-tokens new tokens, an end-of-generation token included.
//
// --sequences parallel sequences share one llama.cpp context: each is a worker that takes the next sample
// when its last one ends (continuous batching), and node-llama-cpp puts the tokens that all the workers queue
// in one event-loop cycle into one llama_decode batch. Prints one JSON line on stdout: new_tokens, seconds (from
// the first prompt's evaluation to the last sample's end: prompt evaluation included, model loading and
// tokenization excluded), tokens_per_s and the settings (also written to --out); llama.cpp's warnings and a line
// on the binary and the context go to stderr.

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const { values: opt } = parseArgs({
    options: {
        model: { type: "string" },
        prompts: { type: "string" },
        samples: { type: "string", default: "4" },
        "new-tokens": { type: "string", default: "128" },
        temperature: { type: "string", default: "0.8" },
        sequences: { type: "string", default: "32" },
        threads: { type: "string", default: "2" },
        seed: { type: "string", default: "0" },
        limit: { type: "string" }, // only the first N prompts (smoke tests)
        out: { type: "string" }, // also write the result there
    },
    strict: true,
});
if (!opt.model || !opt.prompts) {
    console.error("usage: node scripts/llama_cpp_generate.mjs --model FILE.gguf --prompts PROMPTS.json [...]");
    process.exit(2);
}
const samples = Number(opt.samples), newTokens = Number(opt["new-tokens"]), temperature = Number(opt.temperature);
const threads = Number(opt.threads), seed = Number(opt.seed);
let prompts = JSON.parse(readFileSync(opt.prompts, "utf8"));
if (opt.limit != null) prompts = prompts.slice(0, Number(opt.limit));
const jobs = prompts.flatMap((_, p) => Array.from({ length: samples }, () => p));
const sequences = Math.max(1, Math.min(Number(opt.sequences), jobs.length));

// ES module imports ignore NODE_PATH: resolve node-llama-cpp from the npm prefix that bench-setup.sh installs into
// (NODE_LLAMA_CPP_PREFIX; default: .cache/node in this repository) and import it by its path.
const prefix = process.env.NODE_LLAMA_CPP_PREFIX ?? new URL("../.cache/node/", import.meta.url).pathname;
const require = createRequire(prefix.endsWith("/") ? prefix : prefix + "/");
const entry = require.resolve("node-llama-cpp");
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
const version = JSON.parse(readFileSync(join(dirname(dirname(entry)), "package.json"), "utf8")).version;

// gpu: false, build "never", skipDownload: use the prebuilt CPU binary (@node-llama-cpp/linux-x64) or fail; never
// fetch or compile llama.cpp. Flash attention is left at node-llama-cpp's default.
const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, maxThreads: threads,
                               logLevel: LlamaLogLevel.warn, progressLogs: false });
const model = await llama.loadModel({ modelPath: opt.model, gpuLayers: 0 });
console.error(`llama.cpp ${llama.llamaCppRelease.release} (${llama.buildType}), ${llama.systemInfo}`);
const tokens = prompts.map((text) => model.tokenize(text, true));
const longest = Math.max(...tokens.map((t) => t.length));
// Each sequence gets its own contextSize cells of the KV cache (llama.cpp rounds it up to a multiple of 256).
const context = await model.createContext({ sequences, contextSize: longest + newTokens + 1, threads,
                                            batchSize: Math.max(512, sequences) });
const seqs = Array.from({ length: sequences }, () => context.getSequence());
console.error(`context: ${sequences} sequences × ${context.contextSize} tokens, ${context.idealThreads} threads, `
              + `flash attention ${context.flashAttention}`);

let next = 0, newTotal = 0, eogEnded = 0;
async function worker(seq) {
    while (next < jobs.length) {
        const j = next++;
        await seq.clearHistory();
        let n = 0;
        // topK/topP/minP null: no such samplers in the chain (node-llama-cpp drops null fields), plain
        // temperature sampling over the whole vocabulary; yieldEogToken so that the end token is counted.
        for await (const token of seq.evaluate(tokens[jobs[j]], { temperature, topK: null, topP: null, minP: null,
                                                                  seed: seed + j, yieldEogToken: true })) {
            n++;
            if (model.isEogToken(token)) {
                eogEnded++;
                break;
            }
            if (n >= newTokens) break;
        }
        newTotal += n;
    }
}

const start = process.hrtime.bigint();
await Promise.all(seqs.map(worker));
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const release = llama.llamaCppRelease;
const result = JSON.stringify({
    new_tokens: newTotal, seconds, tokens_per_s: newTotal / seconds, samples: jobs.length, prompts: prompts.length,
    ended_by_eog: eogEnded, sequences, threads: context.idealThreads, context_size: context.contextSize,
    longest_prompt: longest, node_llama_cpp: version, llama_cpp: release?.release ?? null,
    build: llama.buildType, gpu: llama.gpu, node: process.version,
});
if (opt.out) writeFileSync(opt.out, result + "\n");
console.log(result);
await context.dispose();
await model.dispose();
await llama.dispose();
