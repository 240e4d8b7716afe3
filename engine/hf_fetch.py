"""`python -m engine.hf_fetch REPO FOLDER [--revision R]`: a Hugging Face snapshot into FOLDER, run as a child
process by `engine.downloads` so it can be stopped at any moment.

It prints one JSON line with the total size first (what progress is measured against), then lets
`huggingface_hub` do the fetching. `HF_ENDPOINT` (a mirror) and `HF_TOKEN` come from the environment.
"""

from __future__ import annotations

import argparse
import json
import sys

# Only what a model needs: weights, config, tokenizer and the chat template; not the repo's other formats.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.gguf", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("folder")
    parser.add_argument("--revision", default=None)
    args = parser.parse_args()

    from fnmatch import fnmatch

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(args.repo, revision=args.revision, files_metadata=True)
        files = [s for s in info.siblings or [] if any(fnmatch(s.rfilename, p) for p in ALLOW_PATTERNS)]
        print(json.dumps({"files": len(files), "total_bytes": sum(s.size or 0 for s in files)}), flush=True)
        snapshot_download(args.repo, revision=args.revision, local_dir=args.folder, allow_patterns=ALLOW_PATTERNS)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        print(json.dumps({"log": f"not found: {exc}".splitlines()[0]}), flush=True)
        return 2
    except (HfHubHTTPError, OSError) as exc:
        print(json.dumps({"log": f"{type(exc).__name__}: {exc}".splitlines()[0]}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
