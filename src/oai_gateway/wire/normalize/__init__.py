"""Light normalisation of upstream answers to OpenAI's exact shapes (SPEC §6, §7), by topic.

Works on parsed dicts, never through a model layer: keep the keys OpenAI defines, fill the
required ones an upstream omits with their null value, drop the extras (`timings`, `time_info`,
`reasoning`, …) that strict clients reject.
"""
