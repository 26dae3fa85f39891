"""The seed's snippet verbatim, with the openai 0.28 client (installed apart, in .venv/openai028, since it
cannot live beside openai>=1): `python openai028_snippet.py BASE_URL RUNS` prints the answers as JSON."""
import json
import sys

import openai

openai.api_key = "none"
openai.api_base = sys.argv[1]
answers = []
for _ in range(int(sys.argv[2])):
    response = openai.Completion.create(engine="text-davinci-003", prompt="What is the capital of France?",
                                        max_tokens=50)
    answers.append(response.choices[0].text.strip())
print(json.dumps({"version": openai.version.VERSION, "answers": answers}))
