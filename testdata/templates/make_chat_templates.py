#!/usr/bin/env python3
"""Golden renders of Jinja chat templates (llava-hf's `chat_template.json`) by
transformers' own `apply_chat_template`, for mt's minijinja rendering.

The templates are written here in the shapes llava-hf checkpoints ship (LLaVA-1.5's
`USER: ... ASSISTANT:` with `{% generation %}` blocks, LLaVA-NeXT Mistral's `[INST]`, a
Llama 3 one with `bos_token`, a ChatML one with Python string methods and a default system
turn, one that raises on a role, one writing JSON with transformers' `tojson`), each rendered for the same conversations with and
without the generation prompt, through the tiny test tokenizer (its bos/eos tokens).

    python3 make_chat_templates.py ../models/tiny-llava-hf > chat_templates.json
"""
import json
import sys

import transformers
from transformers import PreTrainedTokenizerFast

TEMPLATES = {
    "llava-1.5": (
        "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
        "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
        "{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
        "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    ),
    "llava-next-mistral": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '[INST] ' }}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}{{' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
        "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>' }}{% elif c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}{% endfor %}"
        "{% endif %}{{ '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "chatml": """{% for message in messages %}
    {% if loop.first and message['role'] != 'system' %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {% endif %}
    {{- '<|im_start|>' + message['role'] + '\n' }}
    {% if message['content'] is string %}
        {{- message['content'].strip() }}
    {% else %}
        {% for c in message['content'] %}
            {% if c['type'] == 'image' %}<image>
{% else %}{{ c['text'].strip() }}{% endif %}
        {% endfor %}
    {% endif %}
    {{- '<|im_end|>\n' }}
    {% if loop.index0 > 8 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{% endif %}""",
    "tojson": (
        "{% for message in messages %}{{ message['role'] }}: {{ message['content'] | tojson }}\n"
        "{{ message | tojson(indent=2) }}\n{% endfor %}"
        "{% if add_generation_prompt %}{{ messages[-1] | tojson(sort_keys=true, ensure_ascii=true) }}"
        "{{ messages | tojson(separators=(',', ':')) }}{% endif %}"
    ),
    "no-system": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
        "{{ message['role'] + ': ' + (message['content'] if message['content'] is string else message['content'][-1]['text']) + eos_token }}{% endfor %}"
    ),
}

IMAGE_Q = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What modality is this image?"}]}]
CONVERSATIONS = {
    "image_question": IMAGE_Q,
    "two_rounds": IMAGE_Q + [
        {"role": "assistant", "content": [{"type": "text", "text": "CT"}]},
        {"role": "user", "content": [{"type": "text", "text": "  Which organ is shown?  "}]},
    ],
    "system_first": [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]}] + IMAGE_Q,
    "text_only": [{"role": "user", "content": "Is there a fracture? Größe ≈ 2 cm 🫁"}],
}


def main():
    tok = PreTrainedTokenizerFast.from_pretrained(sys.argv[1])
    cases = []
    for name, template in TEMPLATES.items():
        for conv_name, messages in CONVERSATIONS.items():
            for add in (True, False):
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": add}
                try:
                    case["prompt"] = tok.apply_chat_template(
                        messages, chat_template=template, tokenize=False, add_generation_prompt=add)
                except Exception as e:
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    out = {"transformers": transformers.__version__, "bos_token": tok.bos_token, "eos_token": tok.eos_token,
           "templates": TEMPLATES, "conversations": CONVERSATIONS, "cases": cases}
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
