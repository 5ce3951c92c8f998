//! RoBERTa text features from a HuggingFace folder (`config.json`, `model.safetensors` and
//! `tokenizer.json`, e.g. `roberta-base`): each text's `<s>` state, mean-pooled state and
//! the pooler output, and the texts' cosine similarities.
//!
//! ```sh
//! cargo run --release -p fiber-roberta --example text_features -- MODEL_DIR "a text" "another text"...
//! ```

use fiber_roberta::{RobertaModel, RobertaTokenizer};

/// The backend (`burn::backend::Wgpu` or `burn::backend::Cuda` for a GPU).
type B = burn::backend::NdArray;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, texts @ ..] = args.as_slice() else {
        anyhow::bail!("usage: text_features MODEL_DIR TEXT...");
    };
    if texts.is_empty() {
        anyhow::bail!("usage: text_features MODEL_DIR TEXT...");
    }
    let device = Default::default();
    let tokenizer = RobertaTokenizer::from_dir(model_dir)?;
    let (model, config) = RobertaModel::<B>::from_pretrained(model_dir, &device)?;
    let (ids, mask) = tokenizer.encode_batch(texts, 32)?.to_tensors::<B>(&device);
    let output = model.forward(ids, mask.clone(), false);
    let [n, len, hidden] = output.last_hidden_state.dims();
    println!(
        "{n} texts × {len} tokens × {hidden} (RoBERTa, {} layers)",
        config.num_hidden_layers
    );

    // Mean over the real tokens (the mask is 1 on them).
    let weights = mask.float().unsqueeze_dim::<3>(2);
    let summed = (output.last_hidden_state * weights.clone())
        .sum_dim(1)
        .reshape([n, hidden]);
    let mean = summed / weights.sum_dim(1).reshape([n, 1]);
    let unit = mean.clone() / mean.powf_scalar(2.0).sum_dim(1).sqrt();
    let similarities = unit
        .clone()
        .matmul(unit.transpose())
        .into_data()
        .to_vec::<f32>()?;
    for (i, text) in texts.iter().enumerate() {
        let row: Vec<String> = similarities[i * n..(i + 1) * n]
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect();
        println!(
            "{text:?}: cosine similarity to each text (mean-pooled) [{}]",
            row.join(", ")
        );
    }
    if let Some(pooled) = output.pooler_output {
        println!("pooler output {:?}", pooled.dims());
    }
    Ok(())
}
