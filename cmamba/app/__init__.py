"""The user journeys behind the CLI, one module each: ``extract`` (a folder or a corpus → a feature cache),
``runs`` (train a cache, open a trained run, evaluate it), ``interop`` (MMSA pickles in and out), ``score`` +
``report`` (score new clips, the HTML report), ``doctor`` (installation checks), ``demo`` + ``demo_media`` (the
embedded default job) and ``config`` (the user's TOML / YAML config file). The app layer may import every library
package; only ``cmamba.cli`` imports it.
"""
