#!/usr/bin/env python3
"""Reference fixtures for crates/sumi-prompt, produced by A1111's own code and transformers.

Writes into crates/sumi-prompt/tests/fixtures/:
  a1111_prompts.json  A1111's reading of a corpus of prompts (hand-picked tricky ones plus a
                      seeded random corpus): extra networks, AND split, schedules per subprompt
                      and parse_prompt_attention per schedule text, or the exception it raises.
  clip_tokens.json    transformers CLIPTokenizer ids (no BOS/EOS) for >= 200 texts, plus a few
                      padded encodings with the SD1 (49407) and SD2 (0) pad token.
  a1111_chunks.json   chunking as A1111's FrozenCLIPEmbedderWithCustomWords.tokenize_line
                      (transcribed below, default options: emphasis "Original", comma padding
                      backtrack 20) on the transformers tokenizer with a fake embedding database.

A1111 code is NOT part of this repository. Pass the directory of an A1111 v1.10.1 checkout (or of
a copy of its modules/prompt_parser.py) with --a1111 DIR; it needs `lark` (A1111 pins 1.1.2):
    .venv/bin/pip install lark==1.1.2
    git clone --depth 1 -b v1.10.1 https://github.com/AUTOMATIC1111/stable-diffusion-webui /tmp/a1111
    .venv/bin/python make_prompt_fixtures.py --a1111 /tmp/a1111 --bpe ../../../shared/data/clip/bpe_simple_vocab_16e6.txt.gz

Lark's Earley parser resolves some ambiguous prompts differently depending on Python's string
hash seed (PYTHONHASHSEED; random per A1111 launch), e.g. "[a:1]:]" keeps or drops the schedule.
Each prompt is therefore evaluated under several hash seeds in subprocesses; where they disagree
the fixture records every outcome seen ("outcomes") instead of one "expected" result.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "crates", "sumi-prompt", "tests", "fixtures")
HASH_SEEDS = list(range(16))

# A1111 modules/extra_networks.py (the regex and the sub it uses), in order of appearance.
RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")


def extra_networks(prompt):
    found = []

    def sub(m):
        found.append({"name": m.group(1), "args": m.group(2).split(":")})
        return ""

    return re.sub(RE_EXTRA_NET, sub, prompt), found


# ---------------------------------------------------------------- parser corpus
HAND = [
    # A1111 doctests (schedules, steps 10) and parse_prompt_attention doctests
    "test", "a [b:3]", "a [b: 3]", "a [[[b]]:2]", "[(a:2):3]", "a [b : c : 1] d", "a[b:[c:d:2]:1]e",
    "a [unbalanced", "a [b:.5] c", "a [{b|d{:.5] c", "((a][:b:c [d:3]", "[a|(b:1.1)]", "[fe|]male",
    "[fe|||]male", "normal text", "an (important) word", "(unbalanced", "\\(literal\\]",
    "(unnecessary)(parens)", "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]",
    # emphasis
    "a girl, (masterpiece:1.2), best quality, ((monochrome)), [blurry]", "(a:1.5) (b:0.5) (c:-1) (d:+2)",
    "(a: 1.5 )", "(a:1.)", "(a:.5)", "(a:1.2.3)", "(abc:1.2.3)", "(a:.)", "(a:1.2.3", "a:1.2.3)",
    "((a:1.2):1.3)", "[[[a]]]", "(((a)))", "([a])", "[(a)]", "(a[b)c]", "a)b]c", "\\\\(a\\\\)", "a\\b\\",
    "\\", "(a\\)b)", "[a\\]b]", "(a:1.1\\)", "(a:1e5)", ": : :", "(a:1)(b:1)", "(a) (b)", "", " ",
    "(a:0)", "(a:00.500)", "(x:1.1)(y:1.1)",
    # BREAK
    "a BREAK b", "a BREAK BREAK b", "BREAK", "aBREAK b", "a BREAKb", "a\nBREAK\nb", "(a BREAK b)",
    "[a BREAK b]", "BREAK_ x", "a  BREAK  (b:1.2) BREAK [c]", "a break b", "a BREAK, b",
    # AND
    "a AND b", "a AND b:2", "a:1.5 AND b : 0.25 ", "a AND", "AND", "a ANDb AND c", "cat AND dog:-1",
    "(a AND b:1.2)", "a AND b AND a", " x AND y ", "a:2 AND a:3", "a:1. AND b:.5 AND c:.", "a\nAND\nb:2",
    "a AND b:2\n", "a :+3", "a :-0.5 ", "a:1e2",
    # scheduling and alternation
    "[a:b:5]", "[a:b:0.5]", "[a:b:0]", "[a:b:-1]", "[a:b:15]", "[a:b:1.5]", "[a::3]", "[:b:3]", "[::3]",
    "[:3]", "[a:3 ]", "[a: 3 ]", "[ a :3]", "[a:3e0]", "[a:1e1]", "[a:2.5e-1]", "[a:+3]", "[a:-3]",
    "[a:3.]", "[a:b:c:3]", "[a:b]", "[a:1.2.3]", "[a|b|c]", "[a|b] [c|d|e]", "[|a]", "[a|]", "[|]",
    "[a|[b|c]]", "[a|[b:c:3]]", "[[a|b]:c:3]", "[(a|b)]", "a|b", "[a|b] c|d", "[a:b:1]:2]",
    "[x:(y:2]:3)", "(a:[b:1)]", "[a:[b:x]:1] [c:2]", "[a:1]x]", "([a:1]", "([b:3])", "[[b:3]]",
    "[a:[b:1]:2]", "[a:(b:1):2]", "[(a:1.5):(b):3] c", "[a:b:1.5e999]", "[a:1e999]", "[a:-1e999]",
    "a [b:3] (c:1.2) [d|e] <lora:x:0.5> BREAK f AND g:0.5",
    # extra networks
    "<lora:foo:0.8> a cat", "a <lora:foo> b", "<hypernet:h:1:2:3>", "<lora::>", "<lora:a>b>", "<:x>",
    "<lo ra:x>", "<lora:<lora:x:1>", "<lora:x:1><lyco:y:0.2>", "<lora:x\n:1>", "a <b:c> AND d <e:f>:2",
    "<lora:x:1>[a:b:2]",
    # unicode and whitespace
    "(猫:1.2), [犬|狐]", "café (crème brûlée:1.1)", "emoji 🐱 (🐶:1.3)", "a\tb\n(c)", "(a:１.５)",
    "(a:٣)", "[a:٣]", "x\u00a0BREAK\u00a0y", "é AND ü:2", "AND\u00e9",
]

ALPHABET = ["a", "b", "c", " ", "[", "]", "(", ")", ":", "|", "1", "2", ".5", "\\", " AND ", "1.5",
            " BREAK ", "<l:x>", "-", "e", "\n", "[a:b:", "(x:1.2)", "0.3", "2.", "  "]


def random_corpus(n, seed):
    rng = random.Random(seed)
    out = []
    seen = set(HAND)
    while len(out) < n:
        p = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 14)))
        if p not in seen:
            seen.add(p)
            out.append({"prompt": p, "steps": rng.choice([3, 4, 7, 10])})
    return out


def evaluate_worker(a1111, corpus_file):
    """Runs inside a subprocess with a fixed PYTHONHASHSEED: A1111's reading of every prompt."""
    sys.path.insert(0, os.path.join(a1111, "modules"))
    sys.path.insert(0, a1111)
    import prompt_parser as pp

    items = json.load(open(corpus_file, encoding="utf-8"))
    results = []
    for item in items:
        prompt, steps = item["prompt"], item["steps"]
        try:
            stripped, nets = extra_networks(prompt)
            indexes, flat, _ = pp.get_multicond_prompt_list([stripped])
            subprompts = []
            for index, weight in indexes[0]:
                text = flat[index]
                schedule = pp.get_learned_conditioning_prompt_schedules(
                    [text], steps, item.get("hires_steps"), item.get("old_scheduling", False))[0]
                subprompts.append({
                    "text": text,
                    "weight": weight,
                    "schedule": [
                        {"end_step": t, "text": s, "attention": pp.parse_prompt_attention(s)}
                        for t, s in schedule
                    ],
                })
            results.append({"extra_networks": nets, "subprompts": subprompts})
        except Exception as e:  # A1111 raises: Sumi must refuse too
            results.append({"error": type(e).__name__, "message": str(e)})
    print(json.dumps(results))


def evaluate(a1111, items):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(items, f)
        path = f.name
    runs = []
    for seed in HASH_SEEDS:
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        out = subprocess.run([sys.executable, __file__, "--worker", path, "--a1111", a1111],
                             env=env, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))
    os.unlink(path)
    cases = []
    for i, item in enumerate(items):
        outcomes = []
        for run in runs:
            if run[i] not in outcomes:
                outcomes.append(run[i])
        case = dict(item)
        if len(outcomes) == 1:
            case["expected"] = outcomes[0]
        else:
            case["outcomes"] = outcomes
        cases.append(case)
    return cases


# ---------------------------------------------------------------- tokenizer corpus
def tokenizer_corpus():
    texts = [
        "", " ", "a", "A", "a photo of a cat", "A Photo Of A CAT", "masterpiece, best quality, 1girl",
        "it's", "IT'S", "they're we've I'm you'll he'd don't", "''s 's's 'S 'sa", "rock'n'roll",
        "hello!!! ??? ...", "a,b,c", "a , b , c", ",,,,", "(masterpiece:1.2)", "[[blurry]]",
        "12345", "3.14159", "1,000,000", "x2 2x 4k 8K UHD", "100%", "#hashtag @user",
        "e-mail: foo@bar.com", "https://example.com/a?b=c&d=e", "C:\\path\\file.txt", "a/b\\c",
        "<|startoftext|>", "<|endoftext|>", "a<|endoftext|>b", "<|ENDOFTEXT|>", "< |endoftext| >",
        "café", "cafe\u0301", "naïve résumé", "Straße STRASSE", "İstanbul ıi", "ΣΑΣ σας ς",
        "ﬁ ﬂ ligature", "Ａｂｃ１２３", "①②③ ⅷ", "½ ¾ ²³", "°C µm Å Ω", "東京タワー", "猫の写真",
        "ｶﾀｶﾅ", "か\u3099", "한국어 텍스트", "\u1100\u1161\u11a8", "中文，标点。", "Привет мир",
        "Ελληνικά", "עברית", "العربية", "हिन्दी", "ภาษาไทย", "Tiếng Việt", "emoji 🐱🐶", "👍🏽",
        "👨‍👩‍👧‍👦", "🇯🇵🇺🇸", "❤️", "☃", "♪♫", "→←↑↓", "™©®", "«quotes» “curly” ‘single’",
        "em—dash en–dash", "…", "a\tb", "a\nb", "a\r\nb", "a  \t\n  b", "  leading", "trailing  ",
        "a\u00a0b", "a\u3000b", "a\u2028b", "a\u0085b", "a\u1680b", "a\u2009b", "a\u200bb",
        "a\ufeffb", "a\u180eb", "a\u001cb\u001db\u001eb\u001fb", "a\u000bb\u000cb", "a\u0000b",
        "a\u0007b", "\u00ad soft hyphen", "ǅ ǆ Ǆ", "ß ẞ", "ŉ", "İ̇", "Ⅻ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚",
        "٠١٢٣ ۴۵", "A1111 sd-v1-5.ckpt", "portrait, 85mm, f/1.8", "8k uhd, dslr, soft lighting",
        "lowres, bad anatomy, bad hands, text, error, missing fingers",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "___", "a_b_c", "--ar 16:9", "<lora:foo:0.8>",
        "BREAK", "a AND b", "x" * 50, "ab" * 40, "supercalifragilisticexpialidocious",
        "Ⓐⓑⓒ", "ℌℑ", "ǰ", "ﬀ", "ᾳ ᾼ", "Ꭰ ꭰ", "ԱԲԳ", "ⴀ", "ა", "ÆØÅ æøå", "Œuvre",
        # combining marks whose canonical order changed after Unicode 9.0 (tokenizers' NFC tables)
        "\ufb1cビ\u0c02\u03da\u246e\u033c\u05c8-", "\u036e\u05c9\u0964", "ų\u0356\u0d3b¨",
        "ẞ〉\u032c\u0d3c乮", "ףּﬦ\u0651\u0d3b", "\u0332\u0d3cU", "\u0345⁸⁒\u032c＿",
        "\u030b\u05c8临", "x\u0359\u0c3cy", "\u093a\u0301 \u0a79\u0300",
    ]
    rng = random.Random(1234)
    pools = [
        list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789,.'!?()[]:;-_"),
        list("àáâãäåçèéêëìíîïñòóôõöùúûüýÿ ÀÉÎÕÜ ßœæ"),
        [chr(c) for c in range(0x3040, 0x30ff)] + [" "],
        [chr(c) for c in range(0x4e00, 0x4e80)] + ["，", "。", " "],
        [chr(c) for c in range(0x1f300, 0x1f650, 7)] + [" ", "\u200d", "\ufe0f"],
        [chr(c) for c in range(0x20, 0x250)] + ["\t", "\n", "\u00a0", "\u3000"],
    ]
    while len(texts) < 260:
        pool = rng.choice(pools)
        texts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
    words = "masterpiece best quality 1girl solo long hair looking at viewer smile open mouth".split()
    for n in (80, 200, 400):
        texts.append(", ".join(rng.choice(words) for _ in range(n)))
    return texts


# ---------------------------------------------------------------- chunking (A1111 tokenize_line)
class PromptChunk:
    def __init__(self):
        self.tokens, self.multipliers, self.fixes = [], [], []


def make_chunker(pp, tok, embeddings):
    """A1111 FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line (sd_hijack_clip.py), transcribed
    with the default options, on an embedding database built as textual_inversion.py does."""
    chunk_length, backtrack = 75, 20
    id_start, id_end = tok.bos_token_id, tok.eos_token_id
    comma_token = tok.get_vocab().get(",</w>")
    ids_lookup = {}
    for name, vectors in embeddings:
        ids = tok([name], truncation=False, add_special_tokens=False)["input_ids"][0]
        ids_lookup[ids[0]] = sorted(ids_lookup.get(ids[0], []) + [(ids, (name, vectors))],
                                    key=lambda x: len(x[0]), reverse=True)

    def find_embedding_at_position(tokens, offset):
        for ids, emb in ids_lookup.get(tokens[offset], []):
            if tokens[offset:offset + len(ids)] == ids:
                return emb, len(ids)
        return None, None

    def tokenize_line(line):
        parsed = pp.parse_prompt_attention(line)
        tokenized = tok([text for text, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
        chunks = []
        chunk = PromptChunk()
        token_count = 0
        last_comma = -1

        def next_chunk(is_last=False):
            nonlocal token_count, last_comma, chunk
            if is_last:
                token_count += len(chunk.tokens)
            else:
                token_count += chunk_length
            to_add = chunk_length - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [id_end] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [id_start] + chunk.tokens + [id_end]
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
            last_comma = -1
            chunks.append(chunk)
            chunk = PromptChunk()

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
            position = 0
            while position < len(tokens):
                token = tokens[position]
                if token == comma_token:
                    last_comma = len(chunk.tokens)
                elif backtrack != 0 and len(chunk.tokens) == chunk_length and last_comma != -1 and len(chunk.tokens) - last_comma <= backtrack:
                    break_location = last_comma + 1
                    reloc_tokens = chunk.tokens[break_location:]
                    reloc_mults = chunk.multipliers[break_location:]
                    chunk.tokens = chunk.tokens[:break_location]
                    chunk.multipliers = chunk.multipliers[:break_location]
                    next_chunk()
                    chunk.tokens = reloc_tokens
                    chunk.multipliers = reloc_mults
                if len(chunk.tokens) == chunk_length:
                    next_chunk()
                embedding, embedding_length_in_tokens = find_embedding_at_position(tokens, position)
                if embedding is None:
                    chunk.tokens.append(token)
                    chunk.multipliers.append(weight)
                    position += 1
                    continue
                emb_len = int(embedding[1])
                if len(chunk.tokens) + emb_len > chunk_length:
                    next_chunk()
                chunk.fixes.append((len(chunk.tokens), embedding[0]))
                chunk.tokens += [0] * emb_len
                chunk.multipliers += [weight] * emb_len
                position += embedding_length_in_tokens
        if chunk.tokens or not chunks:
            next_chunk(is_last=True)
        return chunks, token_count

    return tokenize_line


def chunk_corpus():
    rng = random.Random(99)
    words = "girl cat (red:1.3) [blue] forest, river mountain, sky (((bright))) emb1 bigemb twoword emb".split()
    lines = [
        "", "a cat", "a BREAK b", "BREAK", "BREAK BREAK", "a BREAK", "(a BREAK b)", "emb1", "emb1 emb1",
        "(emb1:1.4), bigemb", "two word emb", "twoword emb", "a, " * 40, "a " * 75, "a " * 76, "a " * 150,
        "a " * 74 + "emb1", "a " * 73 + "bigemb", "a " * 70 + ", " + "b " * 10,
        "a " * 50 + ", " + "b " * 30, "a " * 54 + ", " + "b " * 30, "a " * 55 + ", " + "b " * 30,
        "a " * 56 + ", " + "b " * 30, ", " * 100, "a, " * 20 + "BREAK " + "b, " * 20,
        "(masterpiece:1.2), best quality, ((monochrome)), [blurry], " * 8,
        "a (b [c (d:1.5) e] f) g " * 10, "<|endoftext|> a", "a " * 60 + "emb1 " + "b " * 30,
        # an embedding inside the tail that the comma backtrack moves: A1111 leaves its fix behind
        "a " * 60 + ", " + "b " * 5 + "bigemb " + "b " * 20, "a " * 72 + "bigemb", "(emb1:1.3) BREAK [bigemb]",
    ]
    while len(lines) < 80:
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 140))))
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a1111", required=True, help="A1111 checkout (or a dir with modules/prompt_parser.py)")
    ap.add_argument("--bpe", default=os.path.join(ROOT, "..", "shared", "data", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    a1111 = os.path.abspath(args.a1111)
    if args.worker:
        return evaluate_worker(a1111, args.worker)

    os.makedirs(OUT, exist_ok=True)
    import lark
    import transformers
    from transformers import CLIPTokenizer

    # parser corpus: hand cases at 10 and 20 steps, random ones at 3, 4, 7 or 10 steps
    items = [{"prompt": p, "steps": 10} for p in HAND] + [{"prompt": p, "steps": 20} for p in HAND[:40]]
    items += random_corpus(1500, 7)
    # the hires-pass timeline and A1111's "use old prompt editing timeline" option
    timed = [p for p in HAND if "[" in p and ":" in p][:40]
    items += [{"prompt": p, "steps": 10, "hires_steps": 20} for p in timed]
    items += [{"prompt": p, "steps": 10, "old_scheduling": True} for p in timed]
    cases = evaluate(a1111, items)
    meta = {"generator": "tools/reference/make_prompt_fixtures.py", "lark": lark.__version__,
            "hash_seeds": HASH_SEEDS}
    with open(os.path.join(OUT, "a1111_prompts.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "cases": cases}, f, ensure_ascii=False, separators=(",", ":"))
    ambiguous = sum("outcomes" in c for c in cases)
    print(f"a1111_prompts.json: {len(cases)} cases, {ambiguous} hash-seed dependent in A1111")

    # tokenizer corpus
    tmp = tempfile.mkdtemp()
    toks = {}
    for pad in ("sd1", "sd2"):
        d = os.path.join(tmp, pad)
        subprocess.run([sys.executable, os.path.join(HERE, "make_clip_tokenizer.py"), args.bpe, d, "--pad", pad],
                       check=True, capture_output=True)
        toks[pad] = CLIPTokenizer.from_pretrained(d)
    texts = tokenizer_corpus()
    ids = toks["sd1"](texts, truncation=False, add_special_tokens=False)["input_ids"]
    # transformers registers SD2's pad token "!" as a special token, so an SD2 CLIPTokenizer splits
    # every "!" out as id 0 (A1111 tokenizes SD2 prompts with open_clip, which does not): the ids
    # here are SD1's; SD2 only differs in padding, recorded below on texts without "!".
    sd2_split = [t for t, i in zip(texts, toks["sd2"](texts, add_special_tokens=False)["input_ids"])
                 if i != toks["sd1"](t, add_special_tokens=False)["input_ids"]]
    assert all("!" in t for t in sd2_split), sd2_split
    padded = []
    for text in ["a photo of a cat", "", "(masterpiece:1.2), 東京"]:
        for pad in ("sd1", "sd2"):
            enc = toks[pad](text, padding="max_length", max_length=77, truncation=True)["input_ids"]
            padded.append({"text": text, "pad": pad, "ids": enc})
    tmeta = {"generator": "tools/reference/make_prompt_fixtures.py", "transformers": transformers.__version__,
             "sd2_bang_split": len(sd2_split)}
    with open(os.path.join(OUT, "clip_tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": tmeta, "texts": [{"text": t, "ids": i} for t, i in zip(texts, ids)], "padded": padded},
                  f, ensure_ascii=False, separators=(",", ":"))
    print(f"clip_tokens.json: {len(texts)} texts")

    # chunking corpus
    sys.path.insert(0, os.path.join(a1111, "modules"))
    import prompt_parser as pp
    embeddings = [("emb1", 1), ("bigemb", 5), ("twoword emb", 3), ("emb", 2), ("two word emb", 8)]
    tokenize_line = make_chunker(pp, toks["sd1"], embeddings)
    chunks = []
    for line in chunk_corpus():
        cs, count = tokenize_line(line)
        chunks.append({"line": line, "token_count": count,
                       "chunks": [{"tokens": c.tokens, "multipliers": c.multipliers,
                                   "fixes": [[o, n] for o, n in c.fixes]} for c in cs]})
    with open(os.path.join(OUT, "a1111_chunks.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": {"generator": "tools/reference/make_prompt_fixtures.py", "embeddings": embeddings,
                            "comma_padding_backtrack": 20}, "lines": chunks},
                  f, ensure_ascii=False, separators=(",", ":"))
    print(f"a1111_chunks.json: {len(chunks)} lines")


if __name__ == "__main__":
    main()
