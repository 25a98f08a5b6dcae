"""Networks: registration backbones (pair -> field) and segmentation nets."""
from morphzoo.networks.nets.voxelmorph import VOXELMORPH_VARIANTS, VoxelMorphBackbone
from morphzoo.networks.nets.dense_eca_unet import DenseECAUNet, dense_eca_nodes
from morphzoo.networks.nets.fcn_deep_selfsup import FCN_ARCHITECTURES, FCNDeepSelfSup, resize_displacement
from morphzoo.networks.nets.ghost_sc_unet import GhostSCBlock, GhostSCUNet
from morphzoo.networks.nets.searchmorph import SearchMorph, SearchMorphEncoder
from morphzoo.networks.nets.affine_net import AffineNet
from morphzoo.networks.nets.cascade_fcn import CascadeFCN, MiniFCN
from morphzoo.networks.nets.fmirnet import FMIRNet, ResUNet
from morphzoo.networks.nets.fcn_seg import FCNSegmenter
