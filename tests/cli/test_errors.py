"""`run.py --help`, and the user's mistakes: each one line naming what is wrong, no traceback."""

from tests.cli.runner import run


def test_help_lists_the_commands():
    out = run("--help").stdout
    for command in ("build-data", "train-text-tokenizer", "train-image-tokenizer", "train", "generate", "eval"):
        assert command in out


def test_misspelt_key_and_unknown_command_are_clear_errors(tmp_path):
    result = run("train", "--config", "configs/shapes_toy.py", "--workdir", str(tmp_path),
                 "--config.train.stepz=3", check=False)
    assert result.returncode != 0
    assert "unknown config key 'train.stepz'; did you mean 'train.steps'" in result.stderr
    assert not (tmp_path / "toy").exists()  # nothing started
    result = run("trian", "--config", "configs/shapes_toy.py", check=False)
    assert result.returncode != 0 and "expected one command of" in result.stderr


def test_user_mistakes_end_in_one_line_without_a_traceback(tmp_path, tiny_sources, tiny_data_dir):
    from tests.data import own_data

    toy = ["--config", "configs/shapes_toy.py:tiny", "--workdir", str(tmp_path)]
    dalle = ["--config", "configs/shapes_dalle.py:tiny", "--workdir", str(tmp_path)]
    dalle3 = ["--config", "configs/shapes_dalle3.py:tiny", "--workdir", str(tmp_path)]
    unclip = ["--config", "configs/shapes_unclip.py:tiny", "--workdir", str(tmp_path)]
    files = {name: tmp_path / name for name in ("empty.jpg", "bomb.png", "text.png", "truncated.jpg", "damaged.png")}
    for name, path in files.items():
        path.write_bytes(own_data.bad_images()[name][0])
    (tmp_path / "a_file").write_text("")
    prompts = ["--prompt", "a", "--prompt", "b"]
    mistakes = [
        # Every image command refuses a file it cannot read, naming it, before loading a model.
        (["caption", *dalle3, "--image", str(files["empty.jpg"])], f"cannot read image {files['empty.jpg']}: empty"),
        (["variations", *unclip, "--image", str(files["bomb.png"])],
         f"cannot read image {files['bomb.png']}: too_many_pixels"),
        (["interpolate", *unclip, "--image", str(files["truncated.jpg"]), "--image", str(files["text.png"])],
         f"cannot read image {files['truncated.jpg']}: corrupt_image"),
        (["text-diff", *unclip, "--image", str(files["damaged.png"]), *prompts],
         f"cannot read image {files['damaged.png']}: corrupt_image"),
        (["check-oracle", *toy, "--prompt", "x"], "check-oracle does not read --prompt (the flags it reads: --num)"),
        (["eval", *dalle, "--num-samples", "2"], "eval does not read --num-samples"),
        (["generate", *dalle, "--prompt", "a", "--keep", "2"], "--keep chooses among --rerank N candidates"),
        (["show-data", *toy, "--out", str(tmp_path / "grid.txt")], f"--out {tmp_path / 'grid.txt'}: name a PNG"),
        (["show-data", *toy, f"--config.data.data_dir={tiny_data_dir}", "--split", "tset"],
         "--split tset is not a split of this data set; it has train, validation, test_compositional"),
        (["train", "--config", "configs/shapes_toy.py:huge"], "unknown variant 'huge' of shapes_toy.py"),
        (["train", *toy[:2], "--workdir", str(tmp_path / "a_file")], f"--workdir {tmp_path / 'a_file'} is a file"),
        (["caption", *dalle, "--image", "x.png"], "caption reads the config's 'captioner' section, which"),
        (["train", *toy, "--config.train.steps=0", "--config.optim.b2=1.5"],
         "config 'optim.b2' is 1.5; it must be in [0, 1); 'train.steps' is 0; it must be ≥ 1"),
        (["generate", *dalle, "--prompt", "a", "--num-samples", "-3"], "flag --num_samples=-3: -3 is not a positive"),
        (["show-data", *toy, "--num", "0"], "flag --num=0"),
        (["caption", *dalle, "--mode", "bogus", "--image", "x.png"], "flag --mode=bogus: value should be one of"),
        (["generate", *dalle, "--prompt", "a", "--rerank", "2", "--keep", "3"], "--keep 3 is more than the --rerank 2"),
        (["generate", "--config", "configs/shapes_dalle.py:tiny", "--workdir", str(tmp_path / "nowhere"), "--prompt",
          "a"], f"the work dir {tmp_path / 'nowhere'} does not exist"),
        (["generate", *dalle, "--prompt", "a"], f"no text tokenizer at {tmp_path / 'text_tokenizer.model'}"),
        (["import-weights", *dalle, "--kind", "hf-clip"], "import-weights needs --kind (openai-dvae or hf-clip) and"),
        (["import-weights", *dalle, "--kind", "hf-clip", "--source", str(tmp_path)], "config.json not found"),
        (["train", *toy, "--config.train.steps=many"], "config key 'train.steps': cannot set 'many'"),
        (["train", *toy, "--coordinator", "127.0.0.1:1234", "--process_id", "1"],
         "--coordinator, --process_id only mean something with --distributed"),
    ]
    for args, expected in mistakes:
        result = run(*args, check=False)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode != 0 and "Traceback" not in result.stderr, (args, result.stderr[-2000:])
        assert expected in last and last.startswith(("error:", "config error:")), (args, last)


def test_build_data_with_no_usable_image_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_text("not a picture")
    (tmp_path / "empty" / "a.txt").write_text("a caption")
    result = run("build-data", "--config", "configs/own_data_dalle.py:tiny",
                 f"--config.data.source=folder:{tmp_path / 'empty'}", f"--config.data.data_dir={tmp_path}",
                 check=False)
    assert result.returncode != 0
    assert "no usable example" in result.stderr and "not_an_image" in result.stderr
    assert "Traceback" not in result.stderr
