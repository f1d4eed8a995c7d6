"""The papers' own ``.pt`` checkpoints as diffusers folders: which converter a file needs, the folder it becomes,
and the cache that lets ``--source model.pt`` convert on the fly.

A file is a denoising-diffusion-pytorch checkpoint when it holds a ``GaussianDiffusion`` state
(:mod:`tenshot.models.convert_lucidrains`), else an ADM state dict (:mod:`tenshot.models.convert`). On the fly, the
file converts with ``tenshot convert``'s default settings into ``CACHE/converted/KEY`` (KEY: the file's bytes,
those settings and the converter's revision), once, and a warning names what the file did not record and was
assumed (later uses warn that they use it); a checkpoint trained otherwise (another image size, ADM's heads or
schedule) needs ``tenshot convert`` with its flags.
"""

from __future__ import annotations

from pathlib import Path

from ..cache import cache_root, content_key, replace_folder
from ..errors import TenshotError, warn
from .convert import ADMSettings, adm_assumed, adm_state_dict, adm_structure, convert_adm, converted_card, describe, read_checkpoint
from .convert_lucidrains import LucidrainsSettings, convert_lucidrains, is_lucidrains, lucidrains_assumed
from .diffusion_model import PIPELINE_FILE

CHECKPOINT_SUFFIXES = (".pt", ".pth")
# part of the on-the-fly cache key: a conversion made by an earlier converter is made again, not served
CONVERTER_REVISION = "2026-12-04"
LUCIDRAINS_USAGE = ("Its UNet is tenshot's `LucidrainsUNet`: `import tenshot.models.lucidrains_unet`, then "
                    "`DDPMPipeline.from_pretrained(\"PATH\")` or `DDIMPipeline.from_pretrained(\"PATH\")` load and sample it "
                    "(DDIM as the package samples: call the pipeline with `use_clipped_model_output=True`).")  # fmt: skip


def write_converted(source: Path, out: Path, adm: ADMSettings, lucidrains: LucidrainsSettings) -> tuple[str, str]:
    """Write ``out`` whole (a pipeline folder with a model card) from the checkpoint ``source``. Returns (what it
    holds, the settings assumed), each in words."""
    from ..diffusion.schedule import NoiseSchedule
    from .diffusion_model import DiffusionModel

    loaded = read_checkpoint(source)
    if is_lucidrains(loaded):
        unet, scheduler, summary = convert_lucidrains(loaded, lucidrains)
        assumed = lucidrains_assumed(lucidrains, unet.config.layout)
        card = converted_card(source, "denoising-diffusion-pytorch", "denoising-diffusion-pytorch", summary, assumed, LUCIDRAINS_USAGE)
    else:
        state = adm_state_dict(loaded, source)
        unet, scheduler = convert_adm(state, adm)
        summary, assumed = describe(adm_structure(state)), adm_assumed(adm)
        card = converted_card(source, "guided-diffusion / improved-diffusion", "guided-diffusion", summary, assumed)

    def write(staging: Path) -> None:
        (staging / "README.md").write_text(card)
        DiffusionModel(unet, NoiseSchedule(scheduler)).write(staging)  # model_index.json last: the folder's marker

    replace_folder(out, write, complete=PIPELINE_FILE)
    return summary, assumed


def converted_on_the_fly(path: Path) -> Path:
    """The cached conversion of checkpoint ``path`` at the default settings, made now if it is not there."""
    adm, lucidrains = ADMSettings(), LucidrainsSettings()
    try:
        folder = cache_root() / "converted" / content_key(CONVERTER_REVISION, repr((adm, lucidrains)), path)
    except OSError as error:
        raise TenshotError(f"{path}: could not read ({error.strerror})") from None
    if (folder / PIPELINE_FILE).is_file():
        warn(f"{path}: its conversion with convert's default settings, cached at {folder} (its README.md says what was assumed)")
    else:
        summary, assumed = write_converted(path, folder, adm, lucidrains)
        warn(f"{path} converted on the fly to {folder}: {summary}; assumed {assumed}. "
             f"If it was trained otherwise, run `tenshot convert {path} --out DIR` with its flags and use DIR")  # fmt: skip
    return folder
