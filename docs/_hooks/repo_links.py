"""mkdocs hook: links from a page to files of the repository outside docs/ (``../conf/model/x.yaml``,
``../BENCHMARKS.md``) and to folders (``search/``) work on GitHub but are no page of the site. The
hook checks that each such file or folder exists (a missing one fails the build, as a broken link
to a page does under --strict) and shows it on the site as its repository path in code type."""

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(((?!https?:|mailto:|#)[^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    here = (docs / page.file.src_path).parent

    def swap(m):
        target = (here / m.group(3)).resolve()
        if docs in target.parents and not target.is_dir():
            return m.group(0)  # a page or file inside docs/: mkdocs checks it
        if not target.exists():
            raise PluginError(f"{page.file.src_path}: link to {m.group(3)}, which does not exist in the repository")
        rel = target.relative_to(root).as_posix() + ("/" if target.is_dir() else "")
        text = m.group(2).strip("`")
        return f"`{rel}`" if text == rel or not text else f"{m.group(2)} (`{rel}`)"

    return _LINK.sub(swap, markdown)
