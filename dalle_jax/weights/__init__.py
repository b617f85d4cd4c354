"""Released weights converted into this project's models: OpenAI's dVAE (`openai_dvae`) and
OpenAI's CLIP from `transformers` snapshots (`hf_clip`), mapped by rule (`mapping`)."""
