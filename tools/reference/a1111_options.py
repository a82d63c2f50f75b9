"""A1111 v1.10.1's option keys and defaults, read from its source (modules/shared_options.py and
the OptionInfo entries of the built-in extensions and modules) without importing it.

Usage: a1111_options.py A1111_SOURCE_DIR (a checkout or `git archive v1.10.1` of it) > crates/sumi-server/assets/a1111_options.json

Each `"key": OptionInfo(default, ...)` or `add_option("key", OptionInfo(default, ...))` (also chained: `.info(...)`, `.link(...)`, ...) gives
`key: default`; OptionHTML entries are not options (A1111 does not save them). Defaults that
are not Python literals are evaluated as A1111 v1.10.1 evaluates them on a fresh install
(EXPRESSIONS below); any other expression stops the script, naming it.
"""
import ast
import json
import sys
from pathlib import Path

FILES = [
    "modules/shared_options.py",
    "modules/processing_scripts/comments.py",
    "extensions-builtin/LDSR/scripts/ldsr_model.py",
    "extensions-builtin/Lora/scripts/lora_script.py",
    "extensions-builtin/ScuNET/scripts/scunet_model.py",
    "extensions-builtin/SwinIR/scripts/swinir_model.py",
    "extensions-builtin/canvas-zoom-and-pan/scripts/hotkey_config.py",
    "extensions-builtin/extra-options-section/scripts/extra_options_section.py",
    "extensions-builtin/hypertile/scripts/hypertile_script.py",
]

# defaults given as expressions, with the value a fresh A1111 v1.10.1 install has
EXPRESSIONS = {
    # paths relative to the working directory (util.truncate_path of data_path/outputs/...)
    "util.truncate_path(os.path.join(default_output_dir, 'txt2img-images'))": "outputs/txt2img-images",
    "util.truncate_path(os.path.join(default_output_dir, 'img2img-images'))": "outputs/img2img-images",
    "util.truncate_path(os.path.join(default_output_dir, 'extras-images'))": "outputs/extras-images",
    "util.truncate_path(os.path.join(default_output_dir, 'txt2img-grids'))": "outputs/txt2img-grids",
    "util.truncate_path(os.path.join(default_output_dir, 'img2img-grids'))": "outputs/img2img-grids",
    "util.truncate_path(os.path.join(data_path, 'log', 'images'))": "log/images",
    "util.truncate_path(os.path.join(default_output_dir, 'init-images'))": "outputs/init-images",
    # --enable-console-prompts, off by default
    "shared.cmd_opts.enable_console_prompts": False,
}


def option_call(node):
    """The OptionInfo/OptionHTML call at the root of a chained call, or None."""
    while isinstance(node, ast.Call):
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
        if name in ("OptionInfo", "OptionHTML"):
            return node
        if isinstance(f, ast.Attribute):
            node = f.value
        else:
            return None
    return None


def main():
    root = Path(sys.argv[1])
    out = {}
    for rel in FILES:
        tree = ast.parse((root / rel).read_text(), rel)
        for d in ast.walk(tree):
            if isinstance(d, ast.Dict):
                pairs = zip(d.keys, d.values)
            elif (isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                  and d.func.attr == "add_option" and len(d.args) == 2):
                # `shared.opts.add_option("key", OptionInfo(...))` (SwinIR, ScuNET, LDSR)
                pairs = [tuple(d.args)]
            else:
                continue
            for k, v in pairs:
                call = option_call(v)
                if call is None or not isinstance(k, ast.Constant):
                    continue
                f = call.func
                if (f.attr if isinstance(f, ast.Attribute) else f.id) == "OptionHTML":
                    continue
                arg = call.args[0] if call.args else None
                if arg is None:
                    default = next((kw.value for kw in call.keywords if kw.arg == "default"), None)
                    arg = default
                if arg is None:
                    value = None
                else:
                    try:
                        value = ast.literal_eval(arg)
                    except ValueError:
                        src = ast.unparse(arg)
                        if src not in EXPRESSIONS:
                            sys.exit(f"{rel}: {k.value}: default {src} is not known")
                        value = EXPRESSIONS[src]
                out[k.value] = value
    json.dump(dict(sorted(out.items())), sys.stdout, indent=0, ensure_ascii=False)
    print()


main()
