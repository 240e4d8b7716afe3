"""What the forwarder reads of each endpoint beyond chat: the request's text (estimated when the upstream reports
no usage), the generated text, the usage report in each shape, and a stored response's id."""

from __future__ import annotations

from api.openai import forwarded_endpoints as endpoints


def test_the_request_text_is_the_text_the_model_reads_not_roles_types_or_urls() -> None:
    body = {"model": "m", "instructions": "Be brief", "temperature": 0.2, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"},
                                     {"type": "input_image", "image_url": "https://example.com/cat.png"}]},
        {"type": "function_call_output", "call_id": "c1", "output": "42"}]}
    assert endpoints.RESPONSES.prompt_text(body) == "Be brief\nHello\n42"
    assert endpoints.EMBEDDINGS.prompt_text({"input": ["one", "two"]}) == "one\ntwo"
    assert endpoints.EMBEDDINGS.prompt_text({"input": [[1, 2, 3]]}) == ""  # token ids: no text to count
    assert endpoints.RERANK.prompt_text({"query": "fox", "documents": ["a", {"text": "b"}]}) == "fox\na\nb"
    nested: list[object] = ["deep"]
    for _ in range(100):
        nested = [nested]
    assert endpoints.MODERATIONS.prompt_text({"input": nested}) == ""  # bounded, not a RecursionError


def test_the_generated_text_of_answers_and_events() -> None:
    texts = endpoints.generated_texts
    assert list(texts({"type": "response.output_text.delta", "delta": "Hi"})) == [(0, "Hi")]
    assert list(texts({"type": "transcript.text.delta", "delta": "he"})) == [(0, "he")]
    assert list(texts({"type": "response.completed", "response": {"output": [{"content": [{"text": "x"}]}]}})) == []
    assert list(texts({"text": "a transcript"})) == [(0, "a transcript")]
    assert list(texts({"object": "response", "output": [{"type": "message", "content": [
        {"type": "output_text", "text": "Hello."}]}]})) == [(0, "Hello.")]


def test_usage_in_each_shape() -> None:
    assert endpoints.RERANK.usage({"usage": {"total_tokens": 15}}) == (15, 0)
    assert endpoints.SCORE.usage({"usage": {"prompt_tokens": 8, "total_tokens": 8, "completion_tokens": 0}}) == (8, 0)
    assert endpoints.TRANSCRIPTIONS.usage({"usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 6,
                                                     "total_tokens": 46}}) == (40, 6)
    assert endpoints.TRANSCRIPTIONS.usage({"usage": {"type": "duration", "seconds": 3}}) is None  # no tokens
    assert endpoints.RESPONSES.usage({"type": "response.completed", "response": {"usage": {
        "input_tokens": 11, "output_tokens": 5}}}) == (11, 5)


def test_a_stored_responses_id_from_its_answer_or_first_event() -> None:
    assert endpoints.response_id({"id": "resp_1", "object": "response"}) == "resp_1"
    assert endpoints.response_id({"type": "response.created", "response": {"id": "resp_2", "object": "response"}}
                                 ) == "resp_2"
    assert endpoints.response_id({"id": "embd-1", "object": "list"}) is None
