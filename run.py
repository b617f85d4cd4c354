"""dalle-jax command line.

Usage: python run.py COMMAND --config CONFIG[:VARIANT] [--workdir DIR] [--config.KEY=VALUE ...]

Commands:
  build-data            render the shapes data set (tfds, array_record) for the config; with
                        --config.data.source=folder:DIR|webdataset:GLOB|parquet:GLOB, build the data set
                        --config.data.name from your own images and captions (skipped files listed in
                        DATA_DIR/image_text/NAME/1.0.0/build_report.json)
  show-data             write a PNG grid of examples with both captions (--split, --num, --out)
  check-oracle          score clean renders of every split with the oracle; JSON to stdout
  train-text-tokenizer  train the BPE text tokenizer on the training captions into --workdir
  train-image-tokenizer train the image tokenizer (VQ-VAE or dVAE) into --workdir/image_tokenizer
  import-weights        released weights into --workdir: --kind openai-dvae (--source: the directory of OpenAI's
                        encoder.pkl and decoder.pkl; needs the [convert] extra) to --workdir/image_tokenizer, or
                        --kind hf-clip (--source: a transformers CLIP snapshot) to --workdir/clip; later
                        commands use them as if trained there (docs/weights.md)
  train                 train the config's task into --workdir/TASK (--resume to continue)
  train-clip            train CLIP into --workdir/clip (needs the text tokenizer in --workdir)
  eval-clip             CLIP: zero-shot colour/shape accuracy and recall@1/5; --workdir/clip_eval.json
  generate              DALL·E: images for --prompt (repeatable), --num-samples each, PNG grid to --out;
                        each image is the best of sample.candidates by the model's own likelihood;
                        --rerank N --keep K draws N plain samples and keeps the K that CLIP likes best
  eval                  DALL·E: oracle accuracy on validation and held-out prompts: --workdir/eval.json,
                        eval.md, and the images with their prompts (eval_SPLIT.npz, eval_SPLIT.png);
                        CLIP score when --workdir/clip exists; --rerank N adds reranked (keep 1) figures
  train-captioner       DALL·E 3: train the captioner in --mode alt (pretraining), short or descriptive
                        (fine-tuned from alt) into --workdir/captioner_MODE (needs --workdir/clip)
  caption               DALL·E 3: print captions of --image files (repeatable) in --mode
  recaption             DALL·E 3: caption every split with the --mode captioner (resumable), write the
                        recaptioned tfds data set to --workdir/data and caption quality JSON
  dalle3-experiment     DALL·E 3: every stage, then alt-text vs short vs descriptive captions for the same
                        text-to-image model: --workdir/experiment.json and experiment.md
  train-prior           DALL·E 2: train the config's prior (prior.kind: diffusion or autoregressive) into
                        --workdir/prior_KIND (needs --workdir/clip)
  train-decoder         DALL·E 2: train the CLIP-conditioned diffusion decoder into --workdir/decoder
  train-upsampler       DALL·E 2: train upsampler --stage N (default 1) of the config's cascade (upsamplers)
                        into --workdir/SECTION (upsampler for the one stage of shapes_unclip.py)
  unclip-generate       DALL·E 2: prior → decoder → upsamplers for each --prompt; PNG grid to --out
                        (--weights DIR: Karlo's released unCLIP from its diffusers snapshot, 256 px)
  variations            DALL·E 2: --num-samples decodings of an --image's CLIP embedding; PNG grid to --out
                        (--weights DIR: Karlo's image-variation snapshot)
  interpolate           DALL·E 2: slerp between two --image embeddings in --num-samples steps; PNG to --out
  text-diff             DALL·E 2: turn an --image's embedding from the first --prompt towards the second;
                        PNG to --out
  serve                 a web page to try the work dir's models (DALL·E 1, unCLIP, captioner tabs) at --host:--port
                        (default 127.0.0.1:7860); needs the [demo] extra (Gradio)
  (eval on a config with task "unclip" scores unCLIP into --workdir/unclip_eval/PRIOR_SAMPLER_STEPS_GUIDANCE/;
   CLIP keeps the best of decoder.sample.candidates (default 4) draws per prompt, ..._bestN/; 1 draws plainly)

Examples:
  python run.py build-data --config configs/shapes_toy.py
  python run.py show-data --config configs/shapes_toy.py --out shapes.png --num 16
  python run.py train-text-tokenizer --config configs/shapes_toy.py --workdir workdir/toy
  python run.py train --config configs/shapes_toy.py --workdir workdir/toy --config.train.steps=500
  python run.py generate --config configs/shapes_dalle.py --workdir workdir/dalle \
      --prompt "a small red circle above a large blue square" --num-samples 16 --out grid.png
  python run.py variations --config configs/shapes_unclip.py --workdir workdir/unclip --image shape.png
  python run.py unclip-generate --weights karlo-v1-alpha --prompt "a red boat on a lake" --num-samples 4
"""

from absl import app, flags

from dalle_jax.cli import common
from dalle_jax.cli.main import main, parse_flags

flags.adopt_module_key_flags(common)  # --help lists the commands' flags

if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
