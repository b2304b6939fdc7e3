"""SageMaker's framework training images: versions, Python tags, accounts by region (data only).

Extracted from the SageMaker Python SDK's own image configuration (aws/sagemaker-python-sdk,
sagemaker-core/src/sagemaker/core/image_uri_config/{pytorch,tensorflow,huggingface}.json at commit
a24812666d258d9d19c9a82d0c9385ca0bd3ba01, 2026-08-21; the training sections match PyPI
sagemaker 2.257.6), and checked against the SDK's get_training_image_uri() for every version,
region, processor and Python tag (5,329 URIs, no mismatch). Tags: "{version}-{cpu|gpu}-{py}" for
PyTorch and TensorFlow 2.x; "{torch}-transformers{version}-gpu-{py}-{container}" for Hugging Face
(GPU only). The SDK lists no PyTorch image after 2.8 and no TensorFlow 2.15 or 2.17.
"""

# (major, minor) -> (version, Python tag, None)
PYTORCH = {(2, 0): ('2.0.1', 'py310', None),
 (2, 1): ('2.1.0', 'py310', None),
 (2, 2): ('2.2.0', 'py310', None),
 (2, 3): ('2.3.0', 'py311', None),
 (2, 4): ('2.4.0', 'py311', None),
 (2, 5): ('2.5.1', 'py311', None),
 (2, 6): ('2.6.0', 'py312', None),
 (2, 7): ('2.7.1', 'py312', None),
 (2, 8): ('2.8.0', 'py312', None)}

# (major, minor) -> (version, Python tag, None)
TENSORFLOW = {(2, 0): ('2.0.4', 'py36', None),
 (2, 1): ('2.1.3', 'py36', None),
 (2, 2): ('2.2.2', 'py37', None),
 (2, 3): ('2.3.2', 'py37', None),
 (2, 4): ('2.4.3', 'py37', None),
 (2, 5): ('2.5.1', 'py37', None),
 (2, 6): ('2.6.3', 'py38', None),
 (2, 7): ('2.7.1', 'py38', None),
 (2, 8): ('2.8.0', 'py39', None),
 (2, 9): ('2.9.2', 'py39', None),
 (2, 10): ('2.10.1', 'py39', None),
 (2, 11): ('2.11.0', 'py39', None),
 (2, 12): ('2.12.0', 'py310', None),
 (2, 13): ('2.13.0', 'py310', None),
 (2, 14): ('2.14.1', 'py310', None),
 (2, 16): ('2.16.2', 'py310', None),
 (2, 18): ('2.18.0', 'py310', None),
 (2, 19): ('2.19.0', 'py312', None)}

# transformers (major, minor) -> (transformers version, torch version, Python tag, {'gpu': container})
HUGGINGFACE_PYTORCH = {(4, 28): ('4.28.1', '2.0.0', 'py310', {'gpu': 'cu118-ubuntu20.04'}),
 (4, 36): ('4.36.0', '2.1.0', 'py310', {'gpu': 'cu121-ubuntu20.04'}),
 (4, 46): ('4.46.1', '2.3.0', 'py311', {'gpu': 'cu121-ubuntu20.04'}),
 (4, 48): ('4.48.0', '2.3.0', 'py311', {'gpu': 'cu121-ubuntu20.04'}),
 (4, 49): ('4.49.0', '2.5.1', 'py311', {'gpu': 'cu124-ubuntu22.04'}),
 (4, 55): ('4.55.0', '2.7.1', 'py312', {'gpu': 'cu128-ubuntu22.04'}),
 (4, 56): ('4.56.2', '2.8.0', 'py312', {'gpu': 'cu129-ubuntu22.04'}),
 (5, 3): ('5.3.0', '2.9.0', 'py312', {'gpu': 'cu130-ubuntu22.04'})}

# PyTorch version -> the regions it is published in (see REGIONS_MISSING)
PYTORCH_REGION_GROUP = {'2.0.1': 'R40',
 '2.1.0': 'R42',
 '2.2.0': 'R42',
 '2.3.0': 'R42',
 '2.4.0': 'R38',
 '2.5.1': 'R38',
 '2.6.0': 'R38',
 '2.7.1': 'R38',
 '2.8.0': 'R38'}

TENSORFLOW_REGION_GROUP = {'2.0.4': 'R40',
 '2.1.3': 'R40',
 '2.10.1': 'R40',
 '2.11.0': 'R40',
 '2.12.0': 'R38',
 '2.13.0': 'R42',
 '2.14.1': 'R42',
 '2.16.2': 'R38',
 '2.18.0': 'R38',
 '2.19.0': 'R38',
 '2.2.2': 'R40',
 '2.3.2': 'R40',
 '2.4.3': 'R40',
 '2.5.1': 'R40',
 '2.6.3': 'R40',
 '2.7.1': 'R40',
 '2.8.0': 'R40',
 '2.9.2': 'R40'}

HUGGINGFACE_REGION_GROUP = {'4.28.1': 'R31',
 '4.36.0': 'R31',
 '4.46.1': 'R31',
 '4.48.0': 'R31',
 '4.49.0': 'R31',
 '4.55.0': 'R31',
 '4.56.2': 'R31',
 '5.3.0': 'R31'}

# region group -> the regions it lacks
REGIONS_MISSING = {'R31': ('ap-east-2',
         'ap-south-2',
         'ap-southeast-4',
         'ap-southeast-5',
         'ap-southeast-6',
         'ap-southeast-7',
         'eu-central-2',
         'eu-south-2',
         'mx-central-1',
         'us-isof-east-1',
         'us-isof-south-1'),
 'R35': ('ap-east-2',
         'ap-southeast-5',
         'ap-southeast-6',
         'ap-southeast-7',
         'mx-central-1',
         'us-isof-east-1',
         'us-isof-south-1'),
 'R38': ('us-iso-east-1', 'us-isob-east-1', 'us-isof-east-1', 'us-isof-south-1'),
 'R40': ('us-isof-east-1', 'us-isof-south-1'),
 'R42': ()}

# region -> the ECR account of the Deep Learning Containers (PyTorch, TensorFlow, Hugging Face)
ACCOUNTS = {'af-south-1': '626614931356',
 'ap-east-1': '871362719292',
 'ap-east-2': '975050140332',
 'ap-northeast-1': '763104351884',
 'ap-northeast-2': '763104351884',
 'ap-northeast-3': '364406365360',
 'ap-south-1': '763104351884',
 'ap-south-2': '772153158452',
 'ap-southeast-1': '763104351884',
 'ap-southeast-2': '763104351884',
 'ap-southeast-3': '907027046896',
 'ap-southeast-4': '457447274322',
 'ap-southeast-5': '550225433462',
 'ap-southeast-6': '633930458069',
 'ap-southeast-7': '590183813437',
 'ca-central-1': '763104351884',
 'ca-west-1': '204538143572',
 'cn-north-1': '727897471807',
 'cn-northwest-1': '727897471807',
 'eu-central-1': '763104351884',
 'eu-central-2': '380420809688',
 'eu-north-1': '763104351884',
 'eu-south-1': '692866216735',
 'eu-south-2': '503227376785',
 'eu-west-1': '763104351884',
 'eu-west-2': '763104351884',
 'eu-west-3': '763104351884',
 'il-central-1': '780543022126',
 'me-central-1': '914824155844',
 'me-south-1': '217643126080',
 'mx-central-1': '637423239942',
 'sa-east-1': '763104351884',
 'us-east-1': '763104351884',
 'us-east-2': '763104351884',
 'us-gov-east-1': '446045086412',
 'us-gov-west-1': '442386744353',
 'us-iso-east-1': '886529160074',
 'us-isob-east-1': '094389454867',
 'us-isof-east-1': '303241398832',
 'us-isof-south-1': '454834333376',
 'us-west-1': '763104351884',
 'us-west-2': '763104351884'}

# regions whose ECR host is not ecr.<region>.amazonaws.com
HOSTNAMES = {'cn-north-1': 'ecr.cn-north-1.amazonaws.com.cn',
 'cn-northwest-1': 'ecr.cn-northwest-1.amazonaws.com.cn',
 'us-iso-east-1': 'ecr.us-iso-east-1.c2s.ic.gov',
 'us-isob-east-1': 'ecr.us-isob-east-1.sc2s.sgov.gov',
 'us-isof-east-1': 'ecr.us-isof-east-1.csp.hci.ic.gov',
 'us-isof-south-1': 'ecr.us-isof-south-1.csp.hci.ic.gov'}
