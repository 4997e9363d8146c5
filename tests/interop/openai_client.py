"""OpenAI's Python SDK against `mt serve` (tests/it/serve.rs starts the server).

    openai_client.py BASE_URL API_KEY MODEL IMAGE...

Prints one JSON line per check: the models listed, a whole answer, the same question
streamed (deltas, finish reason, usage chunk), a two-turn conversation, requests in
parallel threads, and the errors the SDK raises for a wrong model, bad base64, a wrong
key and an assistant message last (class name and HTTP status). The Rust test compares
the answers with `mt chat`'s and with each other.
"""

import base64
import concurrent.futures
import json
import sys

import openai

base_url, key, model, *images = sys.argv[1:]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)


def data_url(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def ask(question, image, **kw):
    content = [
        {"type": "text", "text": question},
        {"type": "image_url", "image_url": {"url": data_url(image)}},
    ]
    return [{"role": "user", "content": content}]


def emit(**kw):
    print(json.dumps(kw), flush=True)


emit(check="models", ids=[m.id for m in client.models.list().data])

whole = client.chat.completions.create(
    model=model, messages=ask("What is shown?", images[0]), max_tokens=12
)
emit(
    check="whole",
    content=whole.choices[0].message.content,
    role=whole.choices[0].message.role,
    finish=whole.choices[0].finish_reason,
    usage=whole.usage.model_dump(),
    object=whole.object,
)

deltas, finish, usage, roles = [], None, None, []
stream = client.chat.completions.create(
    model=model,
    messages=ask("What is shown?", images[0]),
    max_tokens=12,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            deltas.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
emit(check="stream", deltas=deltas, finish=finish, usage=usage, roles=roles)

turns = ask("What is shown?", images[0]) + [
    {"role": "assistant", "content": "A phantom."},
    {"role": "user", "content": "Which modality?"},
]
two = client.chat.completions.create(model=model, messages=turns, max_tokens=12)
emit(check="two_turns", content=two.choices[0].message.content, usage=two.usage.model_dump())

questions = ["What is shown?", "Describe the image.", "Any abnormality?", "Which organ?"]
jobs = [(q, images[i % len(images)], 4 + 3 * i) for i, q in enumerate(questions * 2)]


def one(job):
    q, image, n = job
    r = client.chat.completions.create(
        model=model, messages=ask(q, image), max_tokens=n, extra_body={"ignore_eos": True}
    )
    return [q, image, n, r.choices[0].message.content, r.usage.completion_tokens]


with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
    together = list(pool.map(one, jobs))
emit(check="parallel", answers=together)
emit(check="serial", answers=[one(j) for j in jobs])


def error_of(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "body": e.body}
    return None


emit(
    check="errors",
    wrong_model=error_of(
        lambda: client.chat.completions.create(model="gpt-4o", messages=ask("Q?", images[0]))
    ),
    bad_base64=error_of(
        lambda: client.chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
                }
            ],
        )
    ),
    wrong_key=error_of(
        lambda: openai.OpenAI(base_url=base_url, api_key="not-the-key", max_retries=0)
        .chat.completions.create(model=model, messages=ask("Q?", images[0]))
    ),
    assistant_last=error_of(
        lambda: client.chat.completions.create(
            model=model, messages=ask("Q?", images[0]) + [{"role": "assistant", "content": "A."}]
        )
    ),
)
