"""Build hook: the shipped recipes stay in recipes/ at the repository root, and a built wheel carries
them as package data in ganstack/shipped_recipes (ganstack.recipe.paths finds either)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithRecipes(build_py):
    """build_py, plus recipes/**/*.yaml copied to ganstack/shipped_recipes/ (an editable install reads
    recipes/ in place)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "ganstack" / "shipped_recipes"
        shutil.rmtree(target, ignore_errors=True)  # a build folder reused: no recipe deleted since survives
        sources = sorted((ROOT / "recipes").rglob("*.yaml"))
        if not sources:  # an sdist without recipes/ would build a wheel that cannot run them
            raise RuntimeError(f"no recipes under {ROOT / 'recipes'}; the wheel must carry them (see MANIFEST.in)")
        for source in sources:
            dest = target / source.relative_to(ROOT / "recipes")
            self.mkpath(str(dest.parent))
            self.copy_file(str(source), str(dest))


setup(cmdclass={"build_py": BuildPyWithRecipes})
