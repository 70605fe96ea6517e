"""Chat templates render in a sandbox that bounds their work (plain template strings, no model)."""
import time
import tracemalloc

import pytest

from specs_local.chat import render_template
from specs_local.errors import SpecsError

# Qwen2.5-Instruct's template, without its tool-call branches.
QWEN = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def render(template, messages=({"role": "user", "content": "What is 12 times 7?"},), **options):
    return render_template(template, name="evil.gguf", messages=list(messages), add_generation_prompt=True,
                           bos_token="<s>", eos_token="</s>", **options)


def test_a_qwen_template_renders():
    assert render(QWEN) == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                            "<|im_end|>\n<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n")
    # Ordinary operations stay allowed: concatenation, repetition, formatting, filters, loops, namespaces.
    ordinary = ("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}"
                "{{ '-' * 3 ~ ns.n }} {{ '%02d' % 7 }} {{ '{:>4}'.format('a') }} {{ 'x'|center(5) }}|"
                "{{ messages|length }} {{ bos_token + eos_token }}")
    assert render(ordinary) == "---3 07    a   x  |1 <s></s>"


@pytest.mark.parametrize("template", [
    "{{ 'x' * 50000000 }}",
    "{{ [0] * 50000000 }}",
    "{{ 10 ** 50000000 }}",
    "{% set s = 'x' * 1000 %}{% set s = s ~ s %}" + "{% set s = s ~ s %}" * 40 + "{{ s|length }}",
    "{% set s = 'x' * 1000 %}{% set s = s + s %}" + "{% set s = s + s %}" * 40 + "{{ s|length }}",
    "{% set s = 'x' * 1000 %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * 40 + "{{ s|length }}",
    "{% set s = 'x' * 900000 %}{% set t %}{% for i in range(1000) %}{{ s }}{% endfor %}{% endset %}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ '%999999999s' % 'x' }}",
    "{{ '%*s' % (999999999, 'x') }}",
    "{{ '{:>999999999}'.format('x') }}",
    "{{ '%999999999s'|format('x') }}",
    "{{ ('x' * 900000).replace('', 'y' * 1000) }}",
    "{{ ('x' * 900000)|replace('', 'y' * 1000) }}",
    "{{ '%(a)s' * 1000 % {'a': 'x' * 900000} }}",
    "{{ ('{0}' * 1000).format('x' * 900000) }}",
    "{{ ([''] * 500000)|join('y' * 400000) }}",
    "{{ ([''] * 20000)|map('string')|join('y' * 100) }}",
    "{{ ('y' * 400000).join([''] * 500000) }}",
])
def test_a_template_that_builds_a_huge_value_is_refused_without_building_it(template):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(SpecsError, match=r"^chat template of evil\.gguf .*; refusing it$"):
            render(template)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2
    assert peak < 20_000_000  # bytes: refused before the value was made


@pytest.mark.parametrize("template", [
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",  # no output, all CPU
    "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",  # each piece small, the whole too big
])
def test_a_template_that_loops_too_long_is_refused_quickly(template):
    started = time.perf_counter()
    with pytest.raises(SpecsError, match=r"^chat template of evil\.gguf .*; refusing it$"):
        render(template)
    assert time.perf_counter() - started < 2


def test_the_rendered_length_is_bounded():
    assert render("{{ 'x' * 10 }}", max_chars=10) == "x" * 10
    with pytest.raises(SpecsError, match=r"^chat template of evil\.gguf renders more than 10 characters; refusing it$"):
        render("{% for m in messages %}{{ m.content }}{% endfor %}", messages=[{"content": "abcdef"}] * 2, max_chars=10)


def test_each_render_has_its_own_budget_and_name_though_the_template_is_compiled_once():
    # The compiled template is shared between renders; the range() budget and the model's name are not.
    loop = "{% for j in range(3) %}{% for i in range(300) %}{% endfor %}{% endfor %}{{ messages|length }}"
    assert render(loop, max_chars=1000) == "1"
    assert render(loop, max_chars=1000) == "1"  # a budget spent by the first render would refuse this one
    with pytest.raises(SpecsError, match=r"^chat template of other\.gguf loops over more than 500 range"):
        render_template(loop, name="other.gguf", messages=[], add_generation_prompt=True, bos_token="",
                        eos_token="", max_chars=500)


def test_raise_exception_and_template_errors_are_one_line_specs_errors():
    with pytest.raises(SpecsError, match=r"^chat template of evil\.gguf: no system$"):
        render("{{ raise_exception('no system') }}")
    for broken in ("{% if %}", "{{ messages[0].content.nope.deeper }}", "{{ 1 / 0 }}", "{{ ''.__class__.__mro__ }}"):
        with pytest.raises(SpecsError, match=r"^chat template of evil\.gguf fails: \w+: ") as error:
            render(broken)
        assert "\n" not in str(error.value)
