#!/usr/bin/env python3
"""Reference fixtures for `mt` training (LLaVA-Med++ / MedTrinity-25M `llava/train/train.py`
semantics) under testdata/train/ (see testdata/train/README.md for the contract).
Run by hand, not by CI, from the repository root:

    /work/venv-torch/bin/python testdata/train/make_train_fixtures.py

(any venv with torch, transformers, tokenizers, safetensors, pillow, numpy and peft works; the
versions used are recorded in step/meta.json). Everything runs on the CPU, float32, one thread,
deterministic algorithms; a rerun with the same versions writes byte-identical files.

Outputs:
    preprocess.json              golden input_ids / labels of preprocess_multimodal + preprocess_llama3
    tokenizer-bos/               the tiny tokenizer with a Llama-3 style BOS-prepending post-processor
    step/batch.jsonl             the 3-record training batch (LLaVA format, images in ../llava/images/)
    step/reference.safetensors   gradients / parameters after AdamW steps (cases full, accum, projector, lora)
    step/meta.json               losses, grad norms, collated ids/labels, hyperparameters, versions

Between the "VENDORED" markers, every block whose comment names a llava/... file is copied
VERBATIM from the MedTrinity-25M repository (UCSC-VLAA/MedTrinity-25M, Apache-2.0, itself
modified from haotian-liu/LLaVA), commit 79b1b03 ("add eval"); the glue in between (the
conversation_lib stand-in, the `preprocess` dispatcher reduced to its llama3 branch, the
CLIPVisionTower/LlavaShim/Trainer stand-ins, transformers 4.37.2's get_parameter_names) is ours
and says so in its comment or docstring.
"""
import sys

sys.dont_write_bytecode = True  # no __pycache__ in testdata

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Sequence

import numpy as np
import peft
import safetensors
import tokenizers
import torch
import torch.nn as nn
import transformers
from PIL import Image
from safetensors.torch import load_file as pt_load_file
from safetensors.torch import save_file as pt_save_file
from tokenizers import Tokenizer, processors
from torch.utils.data import Dataset
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llama.modeling_llama import LlamaRMSNorm

torch.set_num_threads(1)  # fixed reduction order
torch.use_deterministic_algorithms(True)

HERE = Path(__file__).resolve().parent  # testdata/train
TESTDATA = HERE.parent
MODEL_DIR = TESTDATA / "models" / "tiny-llava"
CLIP_DIR = TESTDATA / "models" / "tiny-clip"
IMAGE_FOLDER = TESTDATA / "llava" / "images"
SOURCE_JSONL = TESTDATA / "llava" / "medtrinity_instruct.jsonl"
TOK_BOS_DIR = HERE / "tokenizer-bos"
STEP_DIR = HERE / "step"
MODEL_MAX_LENGTH = 2048
REF_COMMIT = "79b1b03"

# ============================================================================ VENDORED
# llava/constants.py (the constants used below)
IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"


# llava/conversation.py: SeparatorStyle
class SeparatorStyle(Enum):
    """Different separator style."""
    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()



# llava/conversation.py: Conversation (fields, get_prompt, append_message, copy; the
# gradio/image helpers process_image, get_images, to_gradio_chatbot, dict are left out)
@dataclasses.dataclass
class Conversation:
    """A class that keeps all conversation history."""
    system: str
    roles: List[str]
    messages: List[List[str]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str = None
    version: str = "Unknown"
    has_image: bool = True

    skip_next: bool = False

    def get_prompt(self):
        messages = self.messages
        if len(messages) > 0 and type(messages[0][1]) is tuple:
            messages = self.messages.copy()
            init_role, init_msg = messages[0].copy()
            init_msg = init_msg[0].replace("<image>", "").strip()
            if 'mmtag' in self.version:
                messages[0] = (init_role, init_msg)
                messages.insert(0, (self.roles[0], "<Image><image></Image>"))
                messages.insert(1, (self.roles[1], "Received."))
            else:
                messages[0] = (init_role, "<image>\n" + init_msg)

        if self.sep_style == SeparatorStyle.SINGLE:
            ret = self.system + self.sep
            for role, message in messages:
                if message:
                    if type(message) is tuple:
                        message, _, _ = message
                    ret += role + ": " + message + self.sep
                else:
                    ret += role + ":"
        elif self.sep_style == SeparatorStyle.TWO:
            seps = [self.sep, self.sep2]
            ret = self.system + seps[0]
            for i, (role, message) in enumerate(messages):
                if message:
                    if type(message) is tuple:
                        message, _, _ = message
                    ret += role + ": " + message + seps[i % 2]
                else:
                    ret += role + ":"
        elif self.sep_style == SeparatorStyle.MPT:
            ret = self.system + self.sep
            for role, message in messages:
                if message:
                    if type(message) is tuple:
                        message, _, _ = message
                    ret += role + message + self.sep
                else:
                    ret += role
        elif self.sep_style == SeparatorStyle.LLAMA_2:
            wrap_sys = lambda msg: f"<<SYS>>\n{msg}\n<</SYS>>\n\n" if len(msg) > 0 else msg
            wrap_inst = lambda msg: f"[INST] {msg} [/INST]"
            ret = ""

            for i, (role, message) in enumerate(messages):
                if i == 0:
                    assert message, "first message should not be none"
                    assert role == self.roles[0], "first message should come from user"
                if message:
                    if type(message) is tuple:
                        message, _, _ = message
                    if i == 0: message = wrap_sys(self.system) + message
                    if i % 2 == 0:
                        message = wrap_inst(message)
                        ret += self.sep + message
                    else:
                        ret += " " + message + " " + self.sep2
                else:
                    ret += ""
            ret = ret.lstrip(self.sep)
        elif self.sep_style == SeparatorStyle.PLAIN:
            seps = [self.sep, self.sep2]
            ret = self.system
            for i, (role, message) in enumerate(messages):
                if message:
                    if type(message) is tuple:
                        message, _, _ = message
                    ret += message + seps[i % 2]
                else:
                    ret += ""
        else:
            raise ValueError(f"Invalid style: {self.sep_style}")

        if not self.has_image:
            ret = ret.replace("<Image><image></Image>", "") if 'mmtag' in self.version else ret.replace("<image>\n", "")
        return ret

    def append_message(self, role, message):
        self.messages.append([role, message])

    def copy(self):
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[x, y] for x, y in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            version=self.version,
            has_image=self.has_image,)


# llava/conversation.py: conv_llama3
conv_llama3 = Conversation(
    system="""<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.""",
    roles=("<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    version="llama3",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|eot_id|>",
)


# conversation_lib stand-in: train.py sets conversation_lib.default_conversation =
# conv_templates["llama3"] for --version llama3 (conversation.py's own default is conv_llama_2).
conversation_lib = SimpleNamespace(SeparatorStyle=SeparatorStyle, default_conversation=conv_llama3,
                                   conv_templates={"llama3": conv_llama3})


# llava/mm_utils.py: tokenizer_image_token
def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX, return_tensors=None):
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split('<image>')]

    def insert_separator(X, sep):
        return [ele for sublist in zip(X, [sep]*len(X)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])

    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])

    if return_tensors is not None:
        if return_tensors == 'pt':
            return torch.tensor(input_ids, dtype=torch.long)
        raise ValueError(f'Unsupported tensor type: {return_tensors}')
    return input_ids


# llava/train/train.py: rank0_print (local_rank stays None: prints nothing)
local_rank = None
DataArguments = SimpleNamespace  # train.py's dataclass; only used as an annotation below


def rank0_print(*args):
    if local_rank == 0:
        print(*args)


# llava/train/train.py: find_all_linear_names (LoRA target modules)
def find_all_linear_names(model):
    cls = torch.nn.Linear
    lora_module_names = set()
    multimodal_keywords = ['mm_projector', 'vision_tower', 'vision_resampler']
    for name, module in model.named_modules():
        if any(mm_keyword in name for mm_keyword in multimodal_keywords):
            continue
        if isinstance(module, cls):
            names = name.split('.')
            lora_module_names.add(names[0] if len(names) == 1 else names[-1])

    if 'lm_head' in lora_module_names:  # needed for 16-bit
        lora_module_names.remove('lm_head')
    return list(lora_module_names)


# llava/train/train.py: preprocess_multimodal
def preprocess_multimodal(
    sources: Sequence[str],
    data_args: DataArguments
) -> Dict:
    is_multimodal = data_args.is_multimodal
    if not is_multimodal:
        return sources

    for source in sources:
        for sentence in source:
            if isinstance(sentence['value'], bool):
                continue
            if DEFAULT_IMAGE_TOKEN in sentence['value']:
                sentence['value'] = sentence['value'].replace(DEFAULT_IMAGE_TOKEN, '').strip()
                sentence['value'] = DEFAULT_IMAGE_TOKEN + '\n' + sentence['value']
                sentence['value'] = sentence['value'].strip()
                if "mmtag" in conversation_lib.default_conversation.version:
                    sentence['value'] = sentence['value'].replace(DEFAULT_IMAGE_TOKEN,
                                                                  '<Image>' + DEFAULT_IMAGE_TOKEN + '</Image>')
            replace_token = DEFAULT_IMAGE_TOKEN
            if data_args.mm_use_im_start_end:
                replace_token = DEFAULT_IM_START_TOKEN + replace_token + DEFAULT_IM_END_TOKEN
            sentence["value"] = sentence["value"].replace(DEFAULT_IMAGE_TOKEN, replace_token)

    return sources


# llava/train/train.py: preprocess_llama3
def preprocess_llama3(
    sources,
    tokenizer: transformers.PreTrainedTokenizer,
    has_image: bool = False
) -> Dict:
    conv = conversation_lib.default_conversation.copy()
    roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
    tokenizer.use_fast = True
    # Apply prompt templates
    conversations = []
    for i, source in enumerate(sources):
        if roles[source[0]["from"]] != conv.roles[0]:
            # Skip the first one if it is not from human
            print(f"Skipping the first one if it is not from human: {i}")
            source = source[1:]

        conv.messages = []
        for j, sentence in enumerate(source):
            role = roles[sentence["from"]]
            assert role == conv.roles[j % 2], f"{i}"
            conv.append_message(role, sentence["value"])
        conversations.append(conv.get_prompt())

    # Tokenize conversations

    if has_image:
        input_ids = torch.stack(
            [tokenizer_image_token(prompt, tokenizer, return_tensors='pt') for prompt in conversations], dim=0)
    else:
        input_ids = tokenizer(
            conversations,
            return_tensors="pt",
            padding="longest",
            max_length=tokenizer.model_max_length,
            truncation=True,
        ).input_ids

    targets = input_ids.clone()
    assert conv.sep_style == conversation_lib.SeparatorStyle.MPT

    # Mask targets
    sep = conv.sep + conv.roles[1]
    for conversation, target in zip(conversations, targets):
        total_len = int(target.ne(tokenizer.pad_token_id).sum())

        rounds = conversation.split(conv.sep)
        re_rounds = [conv.sep.join(rounds[:3])]
        for conv_idx in range(3, len(rounds), 2):
            re_rounds.append(conv.sep.join(rounds[conv_idx:conv_idx + 2]))
        cur_len = 0
        target[:cur_len] = IGNORE_INDEX
        for i, rou in enumerate(re_rounds):
            if rou == "":
                break

            parts = rou.split(sep)
            if len(parts) != 2:
                break
            parts[0] += sep

            if has_image:
                round_len = len(tokenizer_image_token(rou, tokenizer)) + 1
                instruction_len = len(tokenizer_image_token(parts[0], tokenizer))
            else:
                round_len = len(tokenizer(rou).input_ids) + 1
                instruction_len = len(tokenizer(parts[0]).input_ids)

            if i > 0:
                round_len -= 1
                instruction_len -= 1

            target[cur_len: cur_len + instruction_len] = IGNORE_INDEX

            cur_len += round_len
        target[cur_len:] = IGNORE_INDEX

        if cur_len < tokenizer.model_max_length:
            if cur_len != total_len:
                target[:] = IGNORE_INDEX
                print(
                    f"WARNING: tokenization mismatch: {cur_len} vs. {total_len}."
                    f" (ignored)"
                )

    return dict(
        input_ids=input_ids,
        labels=targets,
    )


def preprocess(sources, tokenizer, has_image=False):
    """llava/train/train.py `preprocess`, reduced to the branch --version llama3 takes
    (sep_style MPT, version "llama3" -> preprocess_llama3)."""
    assert conversation_lib.default_conversation.version == "llama3"
    return preprocess_llama3(sources, tokenizer, has_image=has_image)


# llava/train/train.py: LazySupervisedDataset (whole class)
class LazySupervisedDataset(Dataset):
    """Dataset for supervised fine-tuning."""

    def __init__(self, data_path: str,
                 tokenizer: transformers.PreTrainedTokenizer,
                 data_args: DataArguments):
        super(LazySupervisedDataset, self).__init__()
        if data_path.endswith(".json"):
            list_data_dict = json.load(open(data_path, "r"))
        elif data_path.endswith(".jsonl"):
            list_data_dict = [json.loads(line) for line in open(data_path, "r")]
        else:
            raise ValueError("Unsupported data format")

        rank0_print("Formatting inputs...Skip in lazy mode")
        self.tokenizer = tokenizer
        self.list_data_dict = list_data_dict
        self.data_args = data_args

    def __len__(self):
        return len(self.list_data_dict)

    @property
    def lengths(self):
        length_list = []
        for sample in self.list_data_dict:
            img_tokens = 128 if 'image' in sample else 0
            length_list.append(sum(len(conv['value'].split()) for conv in sample['conversations']) + img_tokens)
        return length_list

    @property
    def modality_lengths(self):
        length_list = []
        for sample in self.list_data_dict:
            try:
                cur_len = sum(len(conv['value'].split()) for conv in sample['conversations'])
                cur_len = cur_len if 'image' in sample else -cur_len
                length_list.append(cur_len)
            except Exception as exn:
                print(sample['conversations'])
        return length_list

 
    def __getitem__(self, i) -> Dict[str, torch.Tensor]:
        sources = self.list_data_dict[i]
        if isinstance(i, int):
            sources = [sources]
        assert len(sources) == 1, "Don't know why it is wrapped to a list"  # FIXME
        if 'image' in sources[0]:
            image_file = self.list_data_dict[i]['image']
            image_folder = self.data_args.image_folder
            processor = self.data_args.image_processor
            image = Image.open(os.path.join(image_folder, image_file)).convert('RGB')
            if self.data_args.image_aspect_ratio == 'pad':
                def expand2square(pil_img, background_color):
                    width, height = pil_img.size
                    if width == height:
                        return pil_img
                    elif width > height:
                        result = Image.new(pil_img.mode, (width, width), background_color)
                        result.paste(pil_img, (0, (width - height) // 2))
                        return result
                    else:
                        result = Image.new(pil_img.mode, (height, height), background_color)
                        result.paste(pil_img, ((height - width) // 2, 0))
                        return result
                image = expand2square(image, tuple(int(x*255) for x in processor.image_mean))
                image = processor.preprocess(image, return_tensors='pt')['pixel_values'][0]
            else:
                image = processor.preprocess(image, return_tensors='pt')['pixel_values'][0]
            sources = preprocess_multimodal(
                copy.deepcopy([e["conversations"] for e in sources]),
                self.data_args)
        else:
            sources = copy.deepcopy([e["conversations"] for e in sources])
        data_dict = preprocess(
            sources,
            self.tokenizer,
            has_image=('image' in self.list_data_dict[i]))
        if isinstance(i, int):
            data_dict = dict(input_ids=data_dict["input_ids"][0],
                             labels=data_dict["labels"][0])


        # image exist in the data
        if 'image' in self.list_data_dict[i]:
            data_dict['image'] = image
        elif self.data_args.is_multimodal:
            # image does not exist in the data, but the model is multimodal
            crop_size = self.data_args.image_processor.crop_size
            data_dict['image'] = torch.zeros(3, crop_size['height'], crop_size['width'])
        return data_dict


# llava/train/train.py: DataCollatorForSupervisedDataset
@dataclass
class DataCollatorForSupervisedDataset(object):
    """Collate examples for supervised fine-tuning."""

    tokenizer: transformers.PreTrainedTokenizer

    def __call__(self, instances: Sequence[Dict]) -> Dict[str, torch.Tensor]:
        input_ids, labels = tuple([instance[key] for instance in instances]
                                  for key in ("input_ids", "labels"))
        input_ids = torch.nn.utils.rnn.pad_sequence(
            input_ids,
            batch_first=True,
            padding_value=self.tokenizer.pad_token_id)
        labels = torch.nn.utils.rnn.pad_sequence(labels,
                                                 batch_first=True,
                                                 padding_value=IGNORE_INDEX)
        input_ids = input_ids[:, :self.tokenizer.model_max_length]
        labels = labels[:, :self.tokenizer.model_max_length]
        batch = dict(
            input_ids=input_ids,
            labels=labels,
            attention_mask=input_ids.ne(self.tokenizer.pad_token_id),
        )

        if 'image' in instances[0]:
            images = [instance['image'] for instance in instances]
            if all(x is not None and x.shape == images[0].shape for x in images):
                batch['images'] = torch.stack(images)
            else:
                batch['images'] = images

        return batch


class CLIPVisionTower(nn.Module):
    """llava/model/multimodal_encoder/clip_encoder.py CLIPVisionTower: __init__/load_model are
    ours (load ../models/tiny-clip; transformers 5's CLIPImageProcessorPil = the old slow PIL
    CLIPImageProcessor); from feature_select to device the code is VERBATIM."""

    def __init__(self, path):
        super().__init__()
        self.select_layer = -2  # --mm_vision_select_layer -2
        self.select_feature = "patch"
        self.image_processor = CLIPImageProcessorPil.from_pretrained(str(path))
        self.vision_tower = CLIPVisionModel.from_pretrained(str(path), attn_implementation="eager")
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    def feature_select(self, image_forward_outs):
        image_features = image_forward_outs.hidden_states[self.select_layer]
        if self.select_feature == 'patch':
            image_features = image_features[:, 1:]
        elif self.select_feature == 'cls_patch':
            image_features = image_features
        else:
            raise ValueError(f'Unexpected select feature: {self.select_feature}')
        return image_features

    @torch.no_grad()
    def forward(self, images):
        if type(images) is list:
            image_features = []
            for image in images:
                image_forward_out = self.vision_tower(image.to(device=self.device, dtype=self.dtype).unsqueeze(0), output_hidden_states=True)
                image_feature = self.feature_select(image_forward_out).to(image.dtype)
                image_features.append(image_feature)
        else:
            image_forward_outs = self.vision_tower(images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
            image_features = self.feature_select(image_forward_outs).to(images.dtype)

        return image_features

    @property
    def dummy_feature(self):
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self):
        return self.vision_tower.dtype

    @property
    def device(self):
        return self.vision_tower.device


class LlavaShim:
    """The parts of LlavaMetaForCausalLM / LlavaLlamaForCausalLM that training touches. The
    language model is a transformers LlamaForCausalLM whose `model` (LlamaModel) also holds the
    projector as `model.mm_projector`, so every parameter name is the checkpoint's name."""

    def __init__(self, llm, tower):
        self.llm = llm
        self.tower = tower
        self.config = SimpleNamespace(
            mm_patch_merge_type="flat", image_aspect_ratio="pad", tune_mm_mlp_adapter=False,
            mm_use_im_start_end=False, tokenizer_model_max_length=MODEL_MAX_LENGTH,
            tokenizer_padding_side="right")
        self.device = torch.device("cpu")
        lm = llm.get_base_model() if isinstance(llm, peft.PeftModel) else llm
        self._model = SimpleNamespace(embed_tokens=lm.model.embed_tokens, mm_projector=lm.model.mm_projector,
                                      get_vision_tower=lambda: tower)

    def get_model(self):
        return self._model

    def get_vision_tower(self):
        return self.get_model().get_vision_tower()

    # llava/model/llava_arch.py: LlavaMetaForCausalLM.encode_images, prepare_inputs_labels_for_multimodal
    def encode_images(self, images):
        image_features = self.get_model().get_vision_tower()(images)
        image_features = self.get_model().mm_projector(image_features)
        return image_features

    def prepare_inputs_labels_for_multimodal(
        self, input_ids, position_ids, attention_mask, past_key_values, labels,
        images, image_sizes=None
    ):
        vision_tower = self.get_vision_tower()
        if vision_tower is None or images is None or input_ids.shape[1] == 1:
            return input_ids, position_ids, attention_mask, past_key_values, None, labels

        if type(images) is list or images.ndim == 5:
            if type(images) is list:
                images = [x.unsqueeze(0) if x.ndim == 3 else x for x in images]
            concat_images = torch.cat([image for image in images], dim=0)
            image_features = self.encode_images(concat_images)
            split_sizes = [image.shape[0] for image in images]
            image_features = torch.split(image_features, split_sizes, dim=0)
            mm_patch_merge_type = getattr(self.config, 'mm_patch_merge_type', 'flat')
            image_aspect_ratio = getattr(self.config, 'image_aspect_ratio', 'square')
            if mm_patch_merge_type == 'flat':
                image_features = [x.flatten(0, 1) for x in image_features]
            elif mm_patch_merge_type.startswith('spatial'):
                new_image_features = []
                for image_idx, image_feature in enumerate(image_features):
                    if image_feature.shape[0] > 1:
                        base_image_feature = image_feature[0]
                        image_feature = image_feature[1:]
                        height = width = self.get_vision_tower().num_patches_per_side
                        assert height * width == base_image_feature.shape[0]
                        if image_aspect_ratio == 'anyres':
                            num_patch_width, num_patch_height = get_anyres_image_grid_shape(image_sizes[image_idx], self.config.image_grid_pinpoints, self.get_vision_tower().config.image_size)
                            image_feature = image_feature.view(num_patch_height, num_patch_width, height, width, -1)
                        else:
                            raise NotImplementedError
                        if 'unpad' in mm_patch_merge_type:
                            image_feature = image_feature.permute(4, 0, 2, 1, 3).contiguous()
                            image_feature = image_feature.flatten(1, 2).flatten(2, 3)
                            image_feature = unpad_image(image_feature, image_sizes[image_idx])
                            image_feature = torch.cat((
                                image_feature,
                                self.model.image_newline[:, None, None].expand(*image_feature.shape[:-1], 1).to(image_feature.device)
                            ), dim=-1)
                            image_feature = image_feature.flatten(1, 2).transpose(0, 1)
                        else:
                            image_feature = image_feature.permute(0, 2, 1, 3, 4).contiguous()
                            image_feature = image_feature.flatten(0, 3)
                        image_feature = torch.cat((base_image_feature, image_feature), dim=0)
                    else:
                        image_feature = image_feature[0]
                        if 'unpad' in mm_patch_merge_type:
                            image_feature = torch.cat((
                                image_feature,
                                self.model.image_newline[None].to(image_feature.device)
                            ), dim=0)
                    new_image_features.append(image_feature)
                image_features = new_image_features
            else:
                raise ValueError(f"Unexpected mm_patch_merge_type: {self.config.mm_patch_merge_type}")
        else:
            image_features = self.encode_images(images)

        # TODO: image start / end is not implemented here to support pretraining.
        if getattr(self.config, 'tune_mm_mlp_adapter', False) and getattr(self.config, 'mm_use_im_start_end', False):
            raise NotImplementedError

        # Let's just add dummy tensors if they do not exist,
        # it is a headache to deal with None all the time.
        # But it is not ideal, and if you have a better idea,
        # please open an issue / submit a PR, thanks.
        _labels = labels
        _position_ids = position_ids
        _attention_mask = attention_mask
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        else:
            attention_mask = attention_mask.bool()
        if position_ids is None:
            position_ids = torch.arange(0, input_ids.shape[1], dtype=torch.long, device=input_ids.device)
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE_INDEX)

        # remove the padding using attention_mask -- FIXME
        _input_ids = input_ids
        input_ids = [cur_input_ids[cur_attention_mask] for cur_input_ids, cur_attention_mask in zip(input_ids, attention_mask)]
        labels = [cur_labels[cur_attention_mask] for cur_labels, cur_attention_mask in zip(labels, attention_mask)]

        new_input_embeds = []
        new_labels = []
        cur_image_idx = 0
        for batch_idx, cur_input_ids in enumerate(input_ids):
            num_images = (cur_input_ids == IMAGE_TOKEN_INDEX).sum()
            if num_images == 0:
                cur_image_features = image_features[cur_image_idx]
                cur_input_embeds_1 = self.get_model().embed_tokens(cur_input_ids)
                cur_input_embeds = torch.cat([cur_input_embeds_1, cur_image_features[0:0]], dim=0)
                new_input_embeds.append(cur_input_embeds)
                new_labels.append(labels[batch_idx])
                cur_image_idx += 1
                continue

            image_token_indices = [-1] + torch.where(cur_input_ids == IMAGE_TOKEN_INDEX)[0].tolist() + [cur_input_ids.shape[0]]
            cur_input_ids_noim = []
            cur_labels = labels[batch_idx]
            cur_labels_noim = []
            for i in range(len(image_token_indices) - 1):
                cur_input_ids_noim.append(cur_input_ids[image_token_indices[i]+1:image_token_indices[i+1]])
                cur_labels_noim.append(cur_labels[image_token_indices[i]+1:image_token_indices[i+1]])
            split_sizes = [x.shape[0] for x in cur_labels_noim]
            cur_input_embeds = self.get_model().embed_tokens(torch.cat(cur_input_ids_noim))
            cur_input_embeds_no_im = torch.split(cur_input_embeds, split_sizes, dim=0)
            cur_new_input_embeds = []
            cur_new_labels = []

            for i in range(num_images + 1):
                cur_new_input_embeds.append(cur_input_embeds_no_im[i])
                cur_new_labels.append(cur_labels_noim[i])
                if i < num_images:
                    cur_image_features = image_features[cur_image_idx]
                    cur_image_idx += 1
                    cur_new_input_embeds.append(cur_image_features)
                    cur_new_labels.append(torch.full((cur_image_features.shape[0],), IGNORE_INDEX, device=cur_labels.device, dtype=cur_labels.dtype))

            cur_new_input_embeds = [x.to(self.device) for x in cur_new_input_embeds]

            cur_new_input_embeds = torch.cat(cur_new_input_embeds)
            cur_new_labels = torch.cat(cur_new_labels)

            new_input_embeds.append(cur_new_input_embeds)
            new_labels.append(cur_new_labels)

        # Truncate sequences to max length as image embeddings can make the sequence longer
        tokenizer_model_max_length = getattr(self.config, 'tokenizer_model_max_length', None)
        if tokenizer_model_max_length is not None:
            new_input_embeds = [x[:tokenizer_model_max_length] for x in new_input_embeds]
            new_labels = [x[:tokenizer_model_max_length] for x in new_labels]

        # Combine them
        max_len = max(x.shape[0] for x in new_input_embeds)
        batch_size = len(new_input_embeds)

        new_input_embeds_padded = []
        new_labels_padded = torch.full((batch_size, max_len), IGNORE_INDEX, dtype=new_labels[0].dtype, device=new_labels[0].device)
        attention_mask = torch.zeros((batch_size, max_len), dtype=attention_mask.dtype, device=attention_mask.device)
        position_ids = torch.zeros((batch_size, max_len), dtype=position_ids.dtype, device=position_ids.device)

        for i, (cur_new_embed, cur_new_labels) in enumerate(zip(new_input_embeds, new_labels)):
            cur_len = cur_new_embed.shape[0]
            if getattr(self.config, 'tokenizer_padding_side', 'right') == "left":
                new_input_embeds_padded.append(torch.cat((
                    torch.zeros((max_len - cur_len, cur_new_embed.shape[1]), dtype=cur_new_embed.dtype, device=cur_new_embed.device),
                    cur_new_embed
                ), dim=0))
                if cur_len > 0:
                    new_labels_padded[i, -cur_len:] = cur_new_labels
                    attention_mask[i, -cur_len:] = True
                    position_ids[i, -cur_len:] = torch.arange(0, cur_len, dtype=position_ids.dtype, device=position_ids.device)
            else:
                new_input_embeds_padded.append(torch.cat((
                    cur_new_embed,
                    torch.zeros((max_len - cur_len, cur_new_embed.shape[1]), dtype=cur_new_embed.dtype, device=cur_new_embed.device)
                ), dim=0))
                if cur_len > 0:
                    new_labels_padded[i, :cur_len] = cur_new_labels
                    attention_mask[i, :cur_len] = True
                    position_ids[i, :cur_len] = torch.arange(0, cur_len, dtype=position_ids.dtype, device=position_ids.device)

        new_input_embeds = torch.stack(new_input_embeds_padded, dim=0)

        if _labels is None:
            new_labels = None
        else:
            new_labels = new_labels_padded

        if _attention_mask is None:
            attention_mask = None
        else:
            attention_mask = attention_mask.to(dtype=_attention_mask.dtype)

        if _position_ids is None:
            position_ids = None

        return None, position_ids, attention_mask, past_key_values, new_input_embeds, new_labels

    def forward(self, input_ids, attention_mask, labels, images):
        """LlavaLlamaForCausalLM.forward as called by the HF Trainer (position_ids=None)."""
        (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds, labels
         ) = self.prepare_inputs_labels_for_multimodal(input_ids, None, attention_mask, None, labels, images)
        out = self.llm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       inputs_embeds=inputs_embeds, labels=labels, use_cache=False)
        return out, inputs_embeds, attention_mask, labels


# transformers 4.37.2 trainer_pt_utils.get_parameter_names (the version MedTrinity-25M pins);
# modeling_llama.py of that version does ALL_LAYERNORM_LAYERS.append(LlamaRMSNorm).
def get_parameter_names(model, forbidden_layer_types):
    """
    Returns the names of the model parameters that are not inside a forbidden layer.
    """
    result = []
    for name, child in model.named_children():
        result += [
            f"{name}.{n}"
            for n in get_parameter_names(child, forbidden_layer_types)
            if not isinstance(child, tuple(forbidden_layer_types))
        ]
    # Add model specific parameters (defined with nn.Parameter) since they are not in any child.
    result += list(model._parameters.keys())
    return result


ALL_LAYERNORM_LAYERS = [nn.LayerNorm, LlamaRMSNorm]


def is_sagemaker_mp_enabled():
    return False


class Trainer:
    @staticmethod
    def get_optimizer_cls_and_kwargs(args):
        """transformers 4.37.2 Trainer.get_optimizer_cls_and_kwargs for optim="adamw_torch"."""
        optimizer_kwargs = {"lr": args.learning_rate}
        adam_kwargs = {"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
        optimizer_kwargs.update(adam_kwargs)
        return torch.optim.AdamW, optimizer_kwargs


logger = None


class LLaVATrainer(Trainer):
    def __init__(self, model, args):
        self.model = model
        self.args = args
        self.optimizer = None

    # llava/train/llava_trainer.py: LLaVATrainer.create_optimizer
    def create_optimizer(self):
        """
        Setup the optimizer.

        We provide a reasonable default that works well. If you want to use something else, you can pass a tuple in the
        Trainer's init through `optimizers`, or subclass and override this method in a subclass.
        """
        if is_sagemaker_mp_enabled():
            return super().create_optimizer()

        opt_model = self.model

        if self.optimizer is None:
            decay_parameters = get_parameter_names(opt_model, ALL_LAYERNORM_LAYERS)
            decay_parameters = [name for name in decay_parameters if "bias" not in name]
            if self.args.mm_projector_lr is not None:
                projector_parameters = [name for name, _ in opt_model.named_parameters() if "mm_projector" in name]
                optimizer_grouped_parameters = [
                    {
                        "params": [
                            p for n, p in opt_model.named_parameters() if (n in decay_parameters and n not in projector_parameters and p.requires_grad)
                        ],
                        "weight_decay": self.args.weight_decay,
                    },
                    {
                        "params": [
                            p for n, p in opt_model.named_parameters() if (n not in decay_parameters and n not in projector_parameters and p.requires_grad)
                        ],
                        "weight_decay": 0.0,
                    },
                    {
                        "params": [
                            p for n, p in opt_model.named_parameters() if (n in decay_parameters and n in projector_parameters and p.requires_grad)
                        ],
                        "weight_decay": self.args.weight_decay,
                        "lr": self.args.mm_projector_lr,
                    },
                    {
                        "params": [
                            p for n, p in opt_model.named_parameters() if (n not in decay_parameters and n in projector_parameters and p.requires_grad)
                        ],
                        "weight_decay": 0.0,
                        "lr": self.args.mm_projector_lr,
                    },
                ]
            else:
                optimizer_grouped_parameters = [
                    {
                        "params": [
                            p for n, p in opt_model.named_parameters() if (n in decay_parameters and p.requires_grad)
                        ],
                        "weight_decay": self.args.weight_decay,
                    },
                    {
                        "params": [
                            p for n, p in opt_model.named_parameters() if (n not in decay_parameters and p.requires_grad)
                        ],
                        "weight_decay": 0.0,
                    },
                ]

            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args)

            self.optimizer = optimizer_cls(optimizer_grouped_parameters, **optimizer_kwargs)
            if optimizer_cls.__name__ == "Adam8bit":
                import bitsandbytes

                manager = bitsandbytes.optim.GlobalOptimManager.get_instance()

                skipped = 0
                for module in opt_model.modules():
                    if isinstance(module, nn.Embedding):
                        skipped += sum({p.data_ptr(): p.numel() for p in module.parameters()}.values())
                        logger.info(f"skipped {module}: {skipped/2**20}M params")
                        manager.register_module_override(module, "weight", {"optim_bits": 32})
                        logger.debug(f"bitsandbytes: will optimize {module} in fp32")
                logger.info(f"skipped: {skipped/2**20}M params")

        return self.optimizer
# ============================================================================ END VENDORED


# ============================================================================ tokenizers
SPECIAL_IDS = {"<|begin_of_text|>": 320, "<|end_of_text|>": 321, "<|start_header_id|>": 322,
               "<|end_header_id|>": 323, "<|eot_id|>": 324}
BOS_ID, PAD_ID = 320, 321


def load_tokenizer(kind):
    """"tiny": the checkpoint's tokenizer.json (no post-processor: nothing adds BOS).
    "bos": tokenizer-bos/ (same vocabulary, post-processor prepends <|begin_of_text|>, as the
    real Llama-3 tokenizer does). Both as AutoTokenizer(model_max_length=2048, padding_side="right")."""
    if kind == "tiny":
        tok = PreTrainedTokenizerFast(tokenizer_file=str(MODEL_DIR / "tokenizer.json"), pad_token="<|end_of_text|>",
                                      bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                      model_max_length=MODEL_MAX_LENGTH, padding_side="right")
    else:
        tok = PreTrainedTokenizerFast.from_pretrained(str(TOK_BOS_DIR), model_max_length=MODEL_MAX_LENGTH,
                                                      padding_side="right")
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (BOS_ID, PAD_ID, 324)
    assert tok.model_max_length == MODEL_MAX_LENGTH
    first = tok("hi").input_ids[0]
    assert (first == BOS_ID) == (kind == "bos"), (kind, first)
    assert tok("hi", add_special_tokens=False).input_ids[0] != BOS_ID
    return tok


def write_bos_tokenizer():
    if TOK_BOS_DIR.exists():
        shutil.rmtree(TOK_BOS_DIR)
    TOK_BOS_DIR.mkdir(parents=True)
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    assert tok.post_processor is None
    # Meta-Llama-3's template (its tokenizer.json wraps this in a Sequence with a ByteLevel
    # post-processor, which only touches offsets).
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A:0",
        pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
        special_tokens=[("<|begin_of_text|>", BOS_ID)])
    tok.save(str(TOK_BOS_DIR / "tokenizer.json"), pretty=True)
    for f in ["tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copyfile(MODEL_DIR / f, TOK_BOS_DIR / f)
    a = json.loads((MODEL_DIR / "tokenizer.json").read_text())
    b = json.loads((TOK_BOS_DIR / "tokenizer.json").read_text())
    assert b.pop("post_processor") is not None and a.pop("post_processor") is None and a == b


# ============================================================================ preprocess.json
DATA_ARGS_TEXT = SimpleNamespace(is_multimodal=True, mm_use_im_start_end=False)


def reference_preprocess(conversations, tokenizer, has_image):
    """What LazySupervisedDataset.__getitem__ does to one record's conversations."""
    sources = copy.deepcopy([conversations])
    if has_image:
        sources = preprocess_multimodal(sources, DATA_ARGS_TEXT)
    after_mm = copy.deepcopy(sources[0])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        d = preprocess(sources, tokenizer, has_image=has_image)
    # the prompt preprocess_llama3 builds (same code path)
    conv = conversation_lib.default_conversation.copy()
    roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
    src = sources[0][1:] if roles[sources[0][0]["from"]] != conv.roles[0] else sources[0]
    conv.messages = []
    for s in src:
        conv.append_message(roles[s["from"]], s["value"])
    out = printed.getvalue()
    warning = [l for l in out.splitlines() if "tokenization mismatch" in l]
    return {
        "input_ids": d["input_ids"][0].tolist(),
        "labels": d["labels"][0].tolist(),
        "mismatch": bool(warning),
        "warning": warning[0] if warning else None,
        "skipped_first": "Skipping the first one" in out,
        "after_preprocess_multimodal": after_mm,
        "prompt": conv.get_prompt(),
    }


def h(v):
    return {"from": "human", "value": v}


def g(v):
    return {"from": "gpt", "value": v}


def preprocess_cases(answer0):
    Q = "Describe the image in detail."
    both, bos_only = ("tiny", "bos"), ("bos",)
    return [
        ("single_image_first", both, True, [h("<image>\n" + Q), g(answer0)]),
        ("image_after_question", both, True,
         [h("What modality is shown in this image?\n<image>"), g("The image is a CT scan of the chest.")]),
        ("image_inline_whitespace", both, True,
         [h("  Look at <image> and describe the lesion. \n"), g("A small hypodense lesion.")]),
        ("image_only_no_question", both, True, [h("<image>"), g("A CT scan of the head.")]),
        ("three_rounds", both, True,
         [h("<image>\nWhat modality is this?"), g("Computed tomography."),
          h("Which organ is shown?"), g("The liver, in the upper abdomen."),
          h("Is there a lesion?"), g("Yes, a small hypodense lesion in the right lobe.")]),
        ("text_only", both, False,
         [h("What does a hypodense lesion on CT mean?"), g("It is darker than the surrounding tissue.")]),
        ("text_only_two_rounds", both, False,
         [h("What is MRI?"), g("Magnetic resonance imaging."), h("Is it ionising?"), g("No.")]),
        ("text_only_literal_image_tag", bos_only, False,
         [h("What does the <image> tag mean?"), g("It marks where the image goes.")]),
        ("first_turn_gpt_skipped", both, True,
         [g("Hello! Please send an image."), h("<image>\nWhat organ is this?"), g("The liver.")]),
        ("eot_in_answer_mismatch", both, True,
         [h("<image>\nIs the scan normal?"), g("The scan is normal.<|eot_id|>Nothing else to add.")]),
        ("end_of_text_in_answer_mismatch", both, True,
         [h("<image>\nIs the scan normal?"), g("Yes.<|end_of_text|> It is normal.")]),
        ("unicode", both, True,
         [h("<image>\nDécrivez l'image, s'il vous plaît. 这是什么器官？ 🫁"),
          g("Poumon droit (右肺) : opacité en verre dépoli 🙂 — Größe ≈ 2 cm, naïve café.")]),
        ("empty_answer", both, True, [h("<image>\nDescribe the image."), g("")]),
        ("empty_answer_mid_conversation", bos_only, True,
         [h("<image>\nWhat modality is this?"), g(""), h("Which organ?"), g("The lung.")]),
    ]


def write_json_compact(path, obj):
    """json with one case per block and the id lists on one line each (diff-friendly, small)."""
    def enc(v, ind):
        pad = "  " * ind
        if isinstance(v, dict):
            items = [f'{pad}  {json.dumps(k)}: {enc(x, ind + 1)}' for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            return "[\n" + ",\n".join(pad + "  " + enc(x, ind + 1) for x in v) + "\n" + pad + "]"
        return json.dumps(v, ensure_ascii=False)
    path.write_text(enc(obj, 0) + "\n", encoding="utf-8")


def make_preprocess_json(records):
    answer0 = next(r for r in records if r["id"] == "llava-001")["conversations"][1]["value"]
    toks = {k: load_tokenizer(k) for k in ("tiny", "bos")}
    cases = []
    for name, kinds, has_image, convs in preprocess_cases(answer0):
        for kind in kinds:
            r = reference_preprocess(convs, toks[kind], has_image)
            assert len(r["input_ids"]) == len(r["labels"])
            assert r["input_ids"].count(IMAGE_TOKEN_INDEX) == (1 if has_image else 0)
            cases.append({"name": name, "tokenizer": kind, "has_image": has_image, "conversations": convs,
                          "input_ids": r["input_ids"], "labels": r["labels"], "mismatch": r["mismatch"],
                          "warning": r["warning"], "skipped_first": r["skipped_first"],
                          "after_preprocess_multimodal": r["after_preprocess_multimodal"],
                          "prompt": r["prompt"]})
    by = {(c["name"], c["tokenizer"]): c for c in cases}
    # facts the README states (fail loudly if the reference behaves differently)
    assert not by["single_image_first", "tiny"]["mismatch"] and not by["single_image_first", "bos"]["mismatch"]
    assert by["single_image_first", "bos"]["input_ids"][:2] == [BOS_ID, BOS_ID]      # double BOS
    assert by["single_image_first", "tiny"]["input_ids"][:2] != [BOS_ID, BOS_ID]
    t, b = by["single_image_first", "tiny"]["input_ids"], by["single_image_first", "bos"]["input_ids"]
    it, ib = t.index(IMAGE_TOKEN_INDEX), b.index(IMAGE_TOKEN_INDEX)
    nl = toks["tiny"]("\n", add_special_tokens=False).input_ids
    assert t[:it] == b[1:ib]  # the same prefix, one BOS less
    assert t[:it] == b[1:ib]  # the same prefix, one BOS less
    assert b[ib + 1:ib + 1 + len(nl)] == nl and t[it + 1:] == b[ib + 1 + len(nl):]  # tiny drops "\n" after <image>
    assert by["three_rounds", "tiny"]["mismatch"] and not by["three_rounds", "bos"]["mismatch"]
    assert by["text_only_two_rounds", "tiny"]["mismatch"] and not by["text_only_two_rounds", "bos"]["mismatch"]
    for k in ("tiny", "bos"):
        assert by["eot_in_answer_mismatch", k]["mismatch"]
        assert by["end_of_text_in_answer_mismatch", k]["mismatch"]
        assert by["empty_answer", k]["mismatch"]
        assert by["first_turn_gpt_skipped", k]["skipped_first"]
        m = by["eot_in_answer_mismatch", k]
        assert all(x == IGNORE_INDEX for x in m["labels"])
    write_json_compact(HERE / "preprocess.json", cases)
    return cases


# ============================================================================ step/
STEP_IDS = ["llava-002", "llava-004", "llava-007"]  # PNG, 8-bit (L, RGB, L); 007 is 187x224 (pad path)
SECOND_ROUND = [h("Which part of the image is the region of interest in?"),
                g("It is in the upper center of the image, a small area of about 5% of the image.")]
TWO_ROUND_SAMPLE = 1
HP = dict(adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.1, max_grad_norm=1.0)
CASES = {
    "full": dict(learning_rate=1e-3, mm_projector_lr=None, steps=2, micro_batches=[[0, 1, 2]], trainable="llm+projector"),
    "accum": dict(learning_rate=1e-3, mm_projector_lr=None, steps=1, micro_batches=[[0, 1], [2]], trainable="llm+projector"),
    "projector": dict(learning_rate=2e-3, mm_projector_lr=None, steps=1, micro_batches=[[0, 1, 2]], trainable="projector"),
    "lora": dict(learning_rate=1e-3, mm_projector_lr=2e-4, steps=2, micro_batches=[[0, 1, 2]], trainable="lora+projector"),
}
LORA = dict(r=4, alpha=8, dropout=0.0, init_seed=1234)


def batch_records():
    recs = {r["id"]: r for r in map(json.loads, SOURCE_JSONL.read_text().splitlines())}
    out = [copy.deepcopy(recs[i]) for i in STEP_IDS]
    for r in out:
        assert r["image"].endswith(".png")
    out[TWO_ROUND_SAMPLE]["conversations"] += copy.deepcopy(SECOND_ROUND)
    return out


def load_llm():
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    lc = LlamaConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                     intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                     num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_key_value_heads"],
                     head_dim=cfg["hidden_size"] // cfg["num_attention_heads"], hidden_act=cfg["hidden_act"],
                     max_position_embeddings=cfg["max_position_embeddings"], rms_norm_eps=cfg["rms_norm_eps"],
                     rope_theta=cfg["rope_theta"], tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                     bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"], pad_token_id=None,
                     use_cache=False)
    llm = LlamaForCausalLM._from_config(lc, attn_implementation="eager")
    assert cfg["mm_projector_type"] == "mlp2x_gelu"
    # build_vision_projector (llava/model/multimodal_projector/builder.py) for mlp2x_gelu
    llm.model.mm_projector = nn.Sequential(nn.Linear(cfg["mm_hidden_size"], cfg["hidden_size"]), nn.GELU(),
                                           nn.Linear(cfg["hidden_size"], cfg["hidden_size"]))
    index = json.loads((MODEL_DIR / "model.safetensors.index.json").read_text())
    sd = {}
    for f in sorted(set(index["weight_map"].values())):
        sd.update(pt_load_file(str(MODEL_DIR / f)))
    llm.load_state_dict(sd, strict=True)
    llm.train()
    return llm


class LoraLinear(nn.Module):
    """PEFT LoRA Linear (peft/tuners/lora/layer.py, init_lora_weights=True, dropout 0 = Identity):
    y = base_layer(x) + lora_B(lora_A(x)) * (alpha / r); A kaiming_uniform_(a=sqrt(5)), B zeros."""

    def __init__(self, base, r, alpha, gen):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.scaling = alpha / r
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=gen)
            nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling


def add_lora_by_hand(llm, targets):
    gen = torch.Generator().manual_seed(LORA["init_seed"])
    names = [n for n, m in llm.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in targets
             and "mm_projector" not in n]
    for n in names:  # named_modules order: layer 0 q,k,v,o,gate,up,down, then layer 1 ...
        parent, leaf = n.rsplit(".", 1)
        setattr(llm.get_submodule(parent), leaf, LoraLinear(llm.get_submodule(n), LORA["r"], LORA["alpha"], gen))
    return names


def set_trainable(llm, case):
    kind = CASES[case]["trainable"]
    if kind == "llm+projector":
        llm.requires_grad_(True)
    elif kind == "projector":  # --tune_mm_mlp_adapter True
        llm.requires_grad_(False)
        llm.model.mm_projector.requires_grad_(True)
    else:  # lora: get_peft_model freezes everything but lora_*, initialize_vision_modules re-enables the projector
        for n, p in llm.named_parameters():
            p.requires_grad = "lora_" in n
        llm.model.mm_projector.requires_grad_(True)


def clean_name(n):
    """PEFT names -> checkpoint-style names (base_model.model. prefix, .default adapter level)."""
    n = n.removeprefix("base_model.model.")
    return n.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def trainable(model):
    return {clean_name(n): p for n, p in model.named_parameters() if p.requires_grad}


def snapshot(model):
    return {n: p.detach().clone() for n, p in trainable(model).items()}


def hp_args(case):
    c = CASES[case]
    return SimpleNamespace(learning_rate=c["learning_rate"], mm_projector_lr=c["mm_projector_lr"], **HP)


def group_summary(optimizer, model):
    names = {id(p): clean_name(n) for n, p in model.named_parameters()}
    return [{"lr": grp["lr"], "weight_decay": grp["weight_decay"], "params": [names[id(p)] for p in grp["params"]]}
            for grp in optimizer.param_groups]


def pixels_u8(processor, image_file):
    """uint8 [3,336,336] after convert('RGB') + expand2square + resize + centre crop (the
    dataset's pixel_values before rescale/normalise), for the sha256 in meta.json."""
    img = Image.open(IMAGE_FOLDER / image_file).convert("RGB")
    w, hh = img.size
    bg = tuple(int(x * 255) for x in processor.image_mean)
    if w != hh:
        s = max(w, hh)
        sq = Image.new(img.mode, (s, s), bg)
        sq.paste(img, (0, (w - hh) // 2) if w > hh else ((hh - w) // 2, 0))
        img = sq
    return processor.preprocess(img, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]


def run_training(case, dataset, tower):
    """One case: fresh weights, LLaVATrainer.create_optimizer, HF Trainer inner loop (each
    micro-batch's mean loss / accumulation steps backpropagated, clip_grad_norm_, AdamW step)."""
    c = CASES[case]
    llm = load_llm()
    lora_names = None
    if c["trainable"] == "lora+projector":
        lora_names = add_lora_by_hand(llm, find_all_linear_names(llm))
    set_trainable(llm, case)
    init = snapshot(llm)
    trainer = LLaVATrainer(llm, hp_args(case))
    optimizer = trainer.create_optimizer()
    shim = LlavaShim(llm, tower)
    collator = DataCollatorForSupervisedDataset(tokenizer=dataset.tokenizer)
    accum = len(c["micro_batches"])
    res = {"init": init, "groups": group_summary(optimizer, llm), "steps": [], "lora_modules": lora_names}
    for step in range(c["steps"]):
        micro = []
        for mb in c["micro_batches"]:
            batch = collator([dataset[i] for i in mb])
            out, embeds, mask, labels = shim.forward(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                                     batch["images"])
            loss = out.loss
            assert torch.isfinite(loss)
            # transformers 4.37 LlamaForCausalLM loss, restated: mean CE over shifted labels != -100
            sl, st = out.logits[..., :-1, :].float(), labels[..., 1:]
            ref = nn.functional.cross_entropy(sl.reshape(-1, sl.shape[-1]), st.reshape(-1), ignore_index=IGNORE_INDEX)
            assert abs(ref.item() - loss.item()) <= 1e-6 * abs(loss.item()), (ref.item(), loss.item())
            per_tok = nn.functional.cross_entropy(sl.transpose(1, 2), st, ignore_index=IGNORE_INDEX, reduction="none")
            micro.append({"samples": mb, "loss": loss.item(),
                          "collated_len": int(batch["input_ids"].shape[1]),
                          "expanded_lens": mask.sum(1).tolist(), "padded_len": int(mask.shape[1]),
                          "label_tokens": int((st != IGNORE_INDEX).sum()),
                          "per_sample_loss_sum": per_tok.sum(1).tolist(),
                          "per_sample_label_tokens": (st != IGNORE_INDEX).sum(1).tolist(),
                          "batch": batch})
            (loss / accum).backward()
        grads = {clean_name(n): p.grad.detach().clone() for n, p in llm.named_parameters() if p.grad is not None}
        assert set(grads) <= set(trainable(llm)), set(grads) - set(trainable(llm))
        norm = torch.nn.utils.clip_grad_norm_(llm.parameters(), HP["max_grad_norm"])
        optimizer.step()
        llm.zero_grad(set_to_none=True)
        res["steps"].append({"micro": micro, "grad_norm": norm.item(), "grads": grads, "after": snapshot(llm)})
    return res


def run_lora_with_peft(dataset, tower, hand):
    """The same lora case with peft.get_peft_model, A copied from the hand-made init."""
    llm = load_llm()
    targets = find_all_linear_names(llm)
    cfg = peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], target_modules=targets,
                          lora_dropout=LORA["dropout"], bias="none", task_type="CAUSAL_LM")
    pm = peft.get_peft_model(llm, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                assert ".default." in n
                if ".lora_B." in n:
                    assert torch.count_nonzero(p) == 0, n
                p.copy_(hand["init"][clean_name(n)])
    pm.base_model.model.model.mm_projector.requires_grad_(True)  # initialize_vision_modules
    assert set(trainable(pm)) == set(hand["init"]), set(trainable(pm)) ^ set(hand["init"])
    pm.train()
    trainer = LLaVATrainer(pm, hp_args("lora"))
    optimizer = trainer.create_optimizer()
    groups = group_summary(optimizer, pm)
    assert [(x["lr"], x["weight_decay"], sorted(x["params"])) for x in groups] == \
           [(x["lr"], x["weight_decay"], sorted(x["params"])) for x in hand["groups"]], groups
    shim = LlavaShim(pm, tower)
    collator = DataCollatorForSupervisedDataset(tokenizer=dataset.tokenizer)
    diffs = []
    for step in range(CASES["lora"]["steps"]):
        batch = collator([dataset[i] for i in CASES["lora"]["micro_batches"][0]])
        out, _, _, _ = shim.forward(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["images"])
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(pm.parameters(), HP["max_grad_norm"])
        optimizer.step()
        pm.zero_grad(set_to_none=True)
        after = snapshot(pm)
        hs = hand["steps"][step]
        diffs.append({"loss_abs_diff": abs(out.loss.item() - hs["micro"][0]["loss"]),
                      "grad_norm_abs_diff": abs(norm.item() - hs["grad_norm"]),
                      "params_max_abs_diff": max(float((after[k] - hs["after"][k]).abs().max()) for k in after)})
    for d in diffs:
        assert d["loss_abs_diff"] < 1e-6 and d["grad_norm_abs_diff"] < 1e-6 and d["params_max_abs_diff"] < 1e-7, diffs
    return diffs


def make_step(tokenizer_kind="bos"):
    records = batch_records()
    if STEP_DIR.exists():
        shutil.rmtree(STEP_DIR)
    STEP_DIR.mkdir(parents=True)
    with open(STEP_DIR / "batch.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tokenizer = load_tokenizer(tokenizer_kind)
    tower = CLIPVisionTower(CLIP_DIR)
    data_args = SimpleNamespace(image_folder=str(IMAGE_FOLDER), image_processor=tower.image_processor,
                                image_aspect_ratio="pad", is_multimodal=True, mm_use_im_start_end=False)
    dataset = LazySupervisedDataset(str(STEP_DIR / "batch.jsonl"), tokenizer, data_args)
    items = [dataset[i] for i in range(len(dataset))]

    # sample facts: no mismatch (labels not all masked), one image marker, pixels as the README says
    samples = []
    proc = tower.image_processor
    mean = np.array(proc.image_mean, np.float32)
    std = np.array(proc.image_std, np.float32)
    for r, it in zip(records, items):
        ids, lab = it["input_ids"].tolist(), it["labels"].tolist()
        assert ids.count(IMAGE_TOKEN_INDEX) == 1 and any(x != IGNORE_INDEX for x in lab)
        u8 = pixels_u8(proc, r["image"])
        pv = (((u8.astype(np.float64) * (1 / 255)).astype(np.float32).T - mean) / std).T
        assert np.array_equal(pv, it["image"].numpy()), r["image"]
        samples.append({"id": r["id"], "image": r["image"], "rounds": len(r["conversations"]) // 2,
                        "input_ids": ids, "labels": lab, "len": len(ids),
                        "image_start": ids.index(IMAGE_TOKEN_INDEX),
                        "expanded_len": len(ids) - 1 + 576,
                        "label_tokens": sum(x != IGNORE_INDEX for x in lab),
                        "pixels_sha256": hashlib.sha256(np.ascontiguousarray(u8).tobytes()).hexdigest()})

    # (The CLIP features and step-1 gradients are not stored: the Rust tests check
    # losses, grad norms and updated parameters; keeping testdata under 2 MB.)
    tensors = {}

    results = {}
    for case in CASES:
        a = run_training(case, dataset, tower)
        b = run_training(case, dataset, tower)  # determinism
        for sa, sb in zip(a["steps"], b["steps"]):
            assert sa["grad_norm"] == sb["grad_norm"] and [m["loss"] for m in sa["micro"]] == [m["loss"] for m in sb["micro"]]
            for k in sa["after"]:
                assert torch.equal(sa["after"][k], sb["after"][k]), (case, k)
        results[case] = a

    # sanity: in `full`, every trainable tensor got a nonzero gradient
    full = results["full"]
    for k, p in full["init"].items():
        assert k in full["steps"][0]["grads"], k
        assert torch.count_nonzero(full["steps"][0]["grads"][k]) > 0, k
    emb_g = full["steps"][0]["grads"]["model.embed_tokens.weight"]
    zero_rows = int((emb_g.abs().sum(1) == 0).sum())
    peft_check = run_lora_with_peft(dataset, tower, results["lora"])

    # tensors
    for k, v in full["steps"][0]["after"].items():
        tensors[f"full.after1.{k}"] = v
    for k, v in full["steps"][1]["after"].items():
        tensors[f"full.after2.{k}"] = v
    for k, v in results["accum"]["steps"][0]["after"].items():
        tensors[f"accum.after.{k}"] = v
    for k, v in results["projector"]["steps"][0]["after"].items():
        tensors[f"projector.after.{k}"] = v
    lora = results["lora"]
    for k, v in lora["init"].items():
        if "lora_" in k:
            tensors[f"lora.init.{k}"] = v
    for k, v in lora["steps"][0]["after"].items():
        tensors[f"lora.after.{k}"] = v
    for k, v in lora["steps"][1]["after"].items():
        tensors[f"lora.after2.{k}"] = v
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    assert all(v.dtype == torch.float32 for v in tensors.values())
    pt_save_file(tensors, str(STEP_DIR / "reference.safetensors"), metadata={"format": "pt"})

    def micro_meta(m, with_rows):
        d = {k: m[k] for k in ("samples", "loss", "collated_len", "padded_len", "expanded_lens", "label_tokens",
                               "per_sample_loss_sum", "per_sample_label_tokens")}
        if with_rows:
            d["collated_input_ids"] = m["batch"]["input_ids"].tolist()
            d["collated_labels"] = m["batch"]["labels"].tolist()
        return d

    case_meta = {}
    for case, r in results.items():
        c = CASES[case]
        case_meta[case] = {
            "trainable": c["trainable"], "learning_rate": c["learning_rate"], "mm_projector_lr": c["mm_projector_lr"],
            "weight_decay": HP["weight_decay"], "steps": c["steps"], "micro_batches": c["micro_batches"],
            "gradient_accumulation_steps": len(c["micro_batches"]),
            "param_groups": r["groups"],
            "trainable_params": sorted(r["init"]),
            "per_step": [{"loss": sum(m["loss"] for m in s["micro"]) / len(s["micro"]),
                          "micro": [micro_meta(m, with_rows=(case == "full" and i == 0) or case == "accum")
                                    for m in s["micro"]],
                          "grad_norm_pre_clip": s["grad_norm"],
                          "clip_coef": min(1.0, HP["max_grad_norm"] / (s["grad_norm"] + 1e-6))}
                         for i, s in enumerate(r["steps"])],
        }
    case_meta["lora"]["lora"] = {"r": LORA["r"], "alpha": LORA["alpha"], "scaling": LORA["alpha"] / LORA["r"],
                                 "dropout": LORA["dropout"], "target_modules": sorted(find_all_linear_names(load_llm())),
                                 "modules": lora["lora_modules"],
                                 "init": f"A: nn.init.kaiming_uniform_(a=sqrt(5)) with torch.Generator().manual_seed({LORA['init_seed']}) "
                                         "drawn module by module in named_modules order (A only); B zeros; the values are stored "
                                         "(lora.init.*), so nothing needs to reproduce the RNG",
                                 "peft_check": peft_check}
    meta = {
        "random_weights": "RANDOM WEIGHTS - not a medical model",
        "model": "../../models/tiny-llava (original LLaVA layout), vision tower ../../models/tiny-clip",
        "tokenizer": f"{tokenizer_kind}: ../tokenizer-bos (the tiny vocabulary + a BOS-prepending post-processor, like Meta-Llama-3)",
        "batch_file": "batch.jsonl (images relative to ../../llava/images/)",
        "two_round_sample": TWO_ROUND_SAMPLE,
        "second_round_added": SECOND_ROUND,
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_id": PAD_ID,
        "image_tokens": 576,
        "samples": samples,
        "hyperparameters": {**HP, "optimizer": "torch.optim.AdamW (foreach/fused off: CPU single-tensor path)",
                            "lr_schedule": "constant (no warmup, no decay)", "dtype": "float32",
                            "loss": "mean token cross entropy over shifted labels != -100 of each micro-batch; "
                                    "backward on loss / gradient_accumulation_steps",
                            "clip": "torch.nn.utils.clip_grad_norm_(max_norm=1.0): total = L2 norm of the per-tensor "
                                    "L2 norms of all grads; grads *= min(1, 1.0 / (total + 1e-6))"},
        "cases": case_meta,
        "full_embed_tokens_zero_grad_rows": zero_rows,
        "reference": f"UCSC-VLAA/MedTrinity-25M {REF_COMMIT} (llava/train/train.py, llava_arch.py, llava_trainer.py)",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__, "pillow": Image.__version__,
                     "peft": peft.__version__},
    }
    (STEP_DIR / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return meta


def main():
    write_bos_tokenizer()
    records = [json.loads(l) for l in SOURCE_JSONL.read_text().splitlines()]
    cases = make_preprocess_json(records)
    meta = make_step("bos")
    print(f"preprocess.json: {len(cases)} cases, mismatches: "
          + ", ".join(f"{c['name']}/{c['tokenizer']}" for c in cases if c["mismatch"]))
    for case, m in meta["cases"].items():
        for i, s in enumerate(m["per_step"]):
            print(f"{case} step {i + 1}: loss {s['loss']:.8f} (micro {[x['loss'] for x in s['micro']]}) "
                  f"grad norm {s['grad_norm_pre_clip']:.6f}")
    print("lora vs peft:", meta["cases"]["lora"]["lora"]["peft_check"])
    print("expanded lens:", [s["expanded_len"] for s in meta["samples"]],
          "label tokens:", [s["label_tokens"] for s in meta["samples"]])


if __name__ == "__main__":
    main()
